"""Prefect flows: orchestration only; every task calls a `landmark` stage."""
