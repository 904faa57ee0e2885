"""The blip2core hooks of blip2-runner: losses, tasks and the ``train`` / ``eval`` commands.

Factories import torch-heavy modules only when a component is built, so ``blip2 plugins`` stays fast.
"""

from __future__ import annotations

from blip2core.plugin_api import hookimpl

from blip2_runner.options import LOSS_OPTIONS, TASK_OPTIONS


def _loss_factory(name: str):
    def build(options):
        from blip2_runner.losses import LOSSES

        return LOSSES[name][0](options)

    build.__name__ = f"build_{name}_loss"
    return build


def _task_factory(name: str):
    def build(options):
        from blip2_runner.tasks import TASKS

        return TASKS[name][0](options)

    build.__name__ = f"build_{name.replace('-', '_')}_task"
    return build


@hookimpl
def register_losses(register):
    for name, (options, description) in LOSS_OPTIONS.items():
        register(name, _loss_factory(name), options=options, description=description)


@hookimpl
def register_tasks(register):
    for name, (options, description) in TASK_OPTIONS.items():
        register(name, _task_factory(name), options=options, description=description)


@hookimpl
def register_commands(cli):
    from blip2_runner.cli import add_commands

    add_commands(cli)
