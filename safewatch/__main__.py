"""`python -m safewatch` is the `safewatch` command."""

from .cli import app

app()
