"""``blip2 models | download | export``: named models, fetching them, and sharing what training made.

Heavy imports (torch, huggingface_hub) happen inside the commands, so ``blip2 --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from blip2core.errors import Blip2Error


def preset_status(preset: Any) -> str:
    """``cached``, ``partial (N missing)``, ``not cached``, ``included`` or ``unavailable: why``."""
    from blip2core.checkpoints.hub import ALLOW_PATTERNS
    from blip2core.checkpoints.hub_download import cache_state
    from blip2core.lavis_names import resolve as resolve_lavis
    from blip2core.presets import get_presets

    if preset.kind == "spec":
        try:
            from blip2core.loading import preset_spec

            missing = [str(p) for p in preset_spec(preset).weight_paths() if not p.exists()]
        except Blip2Error as exc:
            return f"unavailable: {exc}"
        return "included" if not missing else f"missing {', '.join(missing)}"
    if preset.kind == "lavis":
        try:
            target = resolve_lavis(*preset.lavis)[0]
        except Blip2Error as exc:
            return f"unavailable: {exc}"
        other = get_presets().get(target)
        return preset_status(other) if other is not None and other.name != preset.name else f"via {target}"
    state = cache_state(preset.hub_id, preset.revision, ALLOW_PATTERNS)
    if state.complete:
        return "cached"
    if state.folder is not None and state.missing:
        return f"partial ({len(state.missing)} missing)"
    return "not cached"


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_command(as_json: bool) -> None:
    """List the named models: size, licence, cached or not, and the plugin that provides each."""
    from blip2core.plugins import get_plugins
    from blip2core.presets import get_presets

    rows = []
    for preset in get_presets():
        rows.append({
            "name": preset.name, "plugin": preset.plugin, "resolves_to": preset.target,
            "download_size": preset.download_size, "licence": preset.licence, "status": preset_status(preset),
            "tasks": list(preset.tasks), "description": preset.description,
        })
    errors = [f"{info.distribution}: {info.error}" for info in get_plugins().infos
              if info.error and "preset" in info.error]
    if as_json:
        click.echo(json.dumps({"models": rows, "errors": errors}, indent=2))
        return
    table = [("NAME", "SIZE", "LICENCE", "STATUS", "PLUGIN", "TASKS", "DESCRIPTION")]
    table += [(r["name"], r["download_size"] or "unknown", r["licence"] or "not stated", r["status"], r["plugin"],
               ",".join(r["tasks"]) or "-", r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths)), row[-1]]).rstrip())
    if not rows:
        click.echo("(no named models: install a plugin that registers some, e.g. blip2-mini)")
    for error in errors:
        click.echo(f"error: {error}", err=True)


@click.command("download")
@click.argument("name", metavar="NAME_OR_HUB_ID")
@click.option("--revision", default=None, help="Branch, tag or commit of a hub id (a preset pins its own).")
def download_command(name: str, revision: str | None) -> None:
    """Fetch a named model (blip2 models) or a hub id into the Hugging Face cache.

    Progress bars on stderr; a dropped connection resumes where it stopped; files already in the
    cache are kept; every fetched file is checked against the hub's sha256 / git checksum.
    """
    from blip2core.checkpoints.hub import ALLOW_PATTERNS, hub_offline, looks_like_hub_id
    from blip2core.checkpoints.hub_download import download_snapshot
    from blip2core.lavis_names import resolve as resolve_lavis
    from blip2core.presets import get_presets, unknown_name_hint

    preset = get_presets().get(name)
    seen = set()
    while preset is not None and preset.kind == "lavis" and preset.name not in seen:
        seen.add(preset.name)
        target = resolve_lavis(*preset.lavis)[0]
        preset = get_presets().get(target)
        if preset is None:
            name = target
    if preset is not None and preset.kind == "spec":
        click.echo(f"{preset.name}: nothing to download, its weights come with the plugin {preset.plugin}")
        return
    if preset is not None:
        repo_id, revision = preset.hub_id, preset.revision if revision is None else revision
    elif looks_like_hub_id(name):
        repo_id = name
    else:
        raise Blip2Error(f"{name}: not a registered model or a hub id 'owner/name'{unknown_name_hint(name)}")
    if hub_offline():
        raise Blip2Error(f"{repo_id}: downloads are off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set); "
                         "unset it to download")
    click.echo(f"downloading {repo_id}{'@' + revision if revision else ''} into the Hugging Face cache", err=True)
    folder = download_snapshot(repo_id, revision, ALLOW_PATTERNS, verify_all=True)
    click.echo(f"{folder} (every file matches the hub's checksums)")


@click.command("export")
@click.argument("source", metavar="RUN_DIR_OR_MODEL")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", "native", "hf"]), default="auto", show_default=True,
              help="native: pipeline.yaml + trainable weights; hf: a Hugging Face BLIP-2 folder; auto: hf where "
                   "the parts allow, else native.")
def export_command(source: str, out: str, fmt: str) -> None:
    """Write what SOURCE loads (a run folder: its newest checkpoint; a step-N folder; anything
    --model takes) to the new folder OUT, to share or load with --model OUT."""
    from blip2core.export import export_pipeline, hf_source_folder
    from blip2core.loading import load_pipeline

    pipe = load_pipeline(source, device="cpu")
    if fmt == "auto":
        fmt = "hf" if hf_source_folder(pipe) is not None else "native"
    path = export_pipeline(pipe, out, fmt)
    click.echo(f"{path}: {fmt} folder of {source}")


def add_model_commands(cli: click.Group) -> None:
    """Register ``models``, ``download`` and ``export`` on the root group."""
    for command in (models_command, download_command, export_command):
        cli.add_command(command)
