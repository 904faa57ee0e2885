"""Registers this plugin's ``blip2`` command; light on purpose (heavy imports happen when it runs)."""

from __future__ import annotations

from blip2core import hookimpl


@hookimpl
def register_commands(cli):
    from blip2_serve.cli import serve_command

    cli.add_command(serve_command)
