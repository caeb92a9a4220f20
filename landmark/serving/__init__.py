"""Serving the production model: search and recognition from the CLI and over HTTP, following the registry.

- :mod:`~landmark.serving.bundle`: a registry version (or a model + index on disk) loaded for queries;
- :mod:`~landmark.serving.cache`: the local, MANIFEST-verified cache of downloaded versions;
- :mod:`~landmark.serving.query`: decode, describe, search, recognise (``evaluate``'s code, per image);
- :mod:`~landmark.serving.service`: the served version's slot and the registry follower (atomic swaps);
- :mod:`~landmark.serving.api`: the FastAPI app (``/search``, ``/recognize``, ``/healthz``, ``/metrics``, ``/``);
- :mod:`~landmark.serving.metrics`: its Prometheus metrics;
- :mod:`~landmark.serving.query_log`: the bounded, rotated log of served queries (statistics and descriptors), which
  ``landmark drift --purpose serving`` compares with the training data.
"""
