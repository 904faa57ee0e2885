"""``blip2``: the root click group, error handling, and the core's own commands.

Importing this module and ``blip2 --help`` stay light: torch, transformers and the pipeline are
imported inside the commands that need them (``tests/test_lazy_imports.py`` checks it).
"""

from __future__ import annotations

import json
import sys

import click

from blip2core.cli import failures
from blip2core.cli.chat_command import chat_command
from blip2core.cli.explain_command import explain_command
from blip2core.cli.inference_commands import add_inference_commands
from blip2core.cli.model_commands import add_model_commands
from blip2core.cli.failures import DEBUG_VARIABLE, run_reporting_errors
from blip2core.plugins import get_plugins
from blip2core.precision import BF16_CPU_FLAGS, FP16_CPU_FLAGS, cpu_flags, resolve_dtype


@click.group()
@click.version_option(package_name="blip2core", prog_name="blip2")
@click.option("--debug", is_flag=True, help=f"Show the traceback of an error (also: {DEBUG_VARIABLE}=1).")
def cli(debug: bool) -> None:
    """BLIP-2-style vision-language pipelines from pluggable components."""
    failures.debug.flag = debug


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(as_json: bool) -> None:
    """List discovered plugins and the components each registered."""
    infos = get_plugins().infos
    if as_json:
        click.echo(json.dumps([info.to_dict() for info in infos], indent=2))
        return
    rows = [("DISTRIBUTION", "VERSION", "STATUS", "KIND", "NAME", "DESCRIPTION")]
    for info in infos:
        if not info.components:
            rows.append((info.distribution, info.version, info.status, "-", "-", ""))
        for i, component in enumerate(info.components):
            head = (info.distribution, info.version, info.status) if i == 0 else ("", "", "")
            rows.append((*head, component.kind, component.name, component.description))
    _print_table(rows)
    click.echo(f"\ndtype auto: {resolve_dtype('auto', 'cpu').describe()}   (blip2 env: details)")
    failed = [info for info in infos if info.error]
    if failed:
        click.echo("\nErrors:")
        for info in failed:
            click.echo(f"  {info.distribution} ({info.module}): {info.error}")


@cli.command("env")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def env_command(as_json: bool) -> None:
    """Versions, devices, the CPU features that matter for precision, and what dtype auto picks."""
    import platform

    import torch

    flags = cpu_flags()
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", *BF16_CPU_FLAGS, *FP16_CPU_FLAGS, "amx_int8")
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_flags": [flag for flag in interesting if flag in flags],
        "dtype_auto": {device: resolve_dtype("auto", device).describe() for device in devices},
        "quantizers": get_plugins().registry.names("quantizer"),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"python {info['python']}, torch {info['torch']}, {info['threads']} threads")
    click.echo(f"cpu flags: {' '.join(info['cpu_flags']) or '(none of ' + ', '.join(interesting) + ')'}")
    for device, line in info["dtype_auto"].items():
        click.echo(f"dtype auto on {device}: {line}")
    click.echo(f"quantizers: {', '.join(info['quantizers']) or '(none: install blip2-quant)'}")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@cli.group("spec")
def spec_group() -> None:
    """Check and describe pipeline spec files."""


@spec_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def spec_validate(file: str) -> None:
    """Check FILE (YAML, JSON or TOML): structure, component names and their options, and that
    every weights file or folder exists."""
    from blip2core.checkpoints.files import check_weights_exist
    from blip2core.spec import PipelineSpec

    spec = PipelineSpec.from_file(file)
    spec.check_components(get_plugins().registry)
    check_weights_exist(spec.weights, spec.weight_paths(), source=file)
    llm = spec.llm.name if spec.llm is not None else "none"
    click.echo(f"{file}: ok (vision={spec.vision.name}, bridge={spec.bridge.name}, llm={llm})")


@spec_group.command("schema")
def spec_schema() -> None:
    """Print the JSON schema of a pipeline spec, with every registered component's options."""
    from blip2core.spec import spec_json_schema

    click.echo(json.dumps(spec_json_schema(get_plugins().registry), indent=2))


add_inference_commands(cli)  # caption, ask, features, match, classify
cli.add_command(explain_command)
cli.add_command(chat_command)
add_model_commands(cli)  # models, download, export


def _add_plugin_commands() -> None:
    for error in get_plugins().call_register_commands(cli):
        click.echo(f"warning: {error}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``blip2``: every error is one line on stderr and a non-zero exit code, with
    no traceback unless ``--debug`` / BLIP2_DEBUG=1 (``blip2core.cli.failures``)."""

    def invoke() -> object:
        _add_plugin_commands()  # discovers the plugins: their selection warnings print as one line
        # without standalone mode click returns ctx.exit(code)'s code instead of exiting
        return cli.main(args=argv, prog_name="blip2", standalone_mode=False)

    code = run_reporting_errors(invoke)
    if code != 0:
        sys.exit(code)
