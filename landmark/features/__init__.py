"""Global and local feature extraction and storage."""
