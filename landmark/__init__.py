"""Landmark retrieval MLOps."""
