"""Platform code: the S3 store, the local services (SeaweedFS, Prefect), parallel execution, private files."""
