"""``blip2 explain IMAGE [QUESTION]``: a PNG of where the Q-Former's queries looked."""

from __future__ import annotations

import json

import click

from blip2core.cli.inference_commands import load_model, model_options, usage_errors


@click.command("explain")
@click.argument("image")
@click.argument("question", required=False)
@click.option("--out", "out", type=click.Path(dir_okay=False), default="explain.png", show_default=True,
              help="Where to write the PNG.")
@model_options
def explain_command(image, question, out, spec, model, device, dtype, quantize, as_json) -> None:
    """Draw the cross-attention of the last Q-Former layer over IMAGE (mean over queries and heads,
    then one small map per query) and write it to --out; prints the answer to QUESTION (or a caption)."""
    from blip2core.inference.explain import explain
    from blip2core.preprocess import ImageLoadError

    pipe = load_model(spec, model, device, dtype, quantize)
    try:
        maps = usage_errors(lambda: explain(pipe, image, question, out))
    except ImageLoadError as error:
        raise click.ClickException(str(error)) from None
    h, w = maps.mean.shape
    result = {"image": image, "question": question, "answer": maps.answer, "png": str(out),
              "queries": int(maps.per_query.shape[0]), "grid": [h, w]}
    if as_json:
        click.echo(json.dumps(result))
    else:
        if maps.answer is not None:
            click.echo(f"{question or 'caption'}\t{maps.answer}")
        click.echo(f"wrote {out} ({result['queries']} queries over a {h}x{w} token grid)")
