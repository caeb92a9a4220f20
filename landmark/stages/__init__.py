"""One module per pipeline stage, each exposing one function shared by the CLI, DVC and the Prefect flows.

Each stage takes the typed :class:`~landmark.config.Config` plus input/output paths, reads its inputs, writes
its outputs and returns a small summary. No stage parses arguments, prints tables or reads params.yaml itself.
Heavy imports happen inside the stage functions so that importing a stage module stays cheap.
"""
