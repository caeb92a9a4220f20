"""``python -m landmark`` (and ``torchrun -m landmark``) runs the CLI."""

from landmark.cli import app

app()
