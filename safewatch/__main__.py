"""`python -m safewatch` is the `safewatch` command."""

from .cli import app

if __name__ == "__main__":  # not when a spawned child process imports it
    app()
