"""The ``minority`` command line (entry point :func:`main`)."""

from minority.cli.main import main

__all__ = ["main"]
