"""Retrieval maths: the FAISS index, re-ranking, recognition, metrics and evaluation plots."""
