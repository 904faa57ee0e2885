"""The ``blip2`` command line. Plugins add commands through the ``register_commands`` hook."""

from blip2core.cli.main import cli, main

__all__ = ["cli", "main"]
