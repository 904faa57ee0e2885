"""Registers ``blip2 ray-batch``; light on purpose: ray and torch load when the command runs."""

from __future__ import annotations

from blip2core import hookimpl


@hookimpl
def register_commands(cli):
    from blip2_ray.cli import ray_batch_command

    cli.add_command(ray_batch_command)
