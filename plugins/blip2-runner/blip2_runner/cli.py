"""``blip2 train RUN.yaml`` and ``blip2 eval RUN.yaml --checkpoint ...`` (added through register_commands).

Both also run under torchrun: ``torchrun --nproc-per-node N -m blip2core.cli train RUN.yaml``.
"""

from __future__ import annotations

import json
import sys

import click


def add_commands(cli: click.Group) -> None:
    if "train" in cli.commands:
        return

    @cli.command("train")
    @click.argument("run_file", metavar="RUN.yaml", type=click.Path(dir_okay=False))
    @click.option("--no-resume", is_flag=True, help="Start from step 0 even if the output folder has checkpoints.")
    @click.option("--check", is_flag=True, help="Only validate RUN.yaml (spec, tasks, losses, data) and exit.")
    def train_command(run_file: str, no_resume: bool, check: bool) -> None:
        """Train the bridge as RUN.yaml says (pipeline, data, tasks, optimizer, schedule, ...).

        Writes OUTPUT/metrics.jsonl, OUTPUT/plots/*.png and OUTPUT/checkpoints/step-*/ and resumes
        from the newest checkpoint there when restarted.
        """
        from blip2_runner.config import RunConfig
        from blip2_runner.trainer import check_run, train

        run = RunConfig.from_file(run_file)
        if check:
            for line in check_run(run):
                click.echo(line)
            click.echo(f"{run_file}: ok")
            return
        result = train(run, resume=not no_resume)
        if result is not None and _is_main():
            loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
            click.echo(f"trained {result.step} steps, last loss {loss}, "
                       f"{result.skipped_steps} skipped; output in {result.output_dir}")

    @cli.command("eval")
    @click.argument("run_file", metavar="RUN.yaml", type=click.Path(dir_okay=False))
    @click.option("--checkpoint", "checkpoint", type=click.Path(), default=None,
                  help="A step-* checkpoint folder, a run's output folder (its newest checkpoint) or a "
                       ".safetensors file of bridge weights; default: the pipeline as composed.")
    @click.option("--limit", type=int, default=None,
                  help="Evaluate only the first N examples of each eval set (default: training.eval_examples).")
    @click.option("--full", is_flag=True, help="Evaluate every example of each eval set.")
    @click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the metrics as JSON here.")
    def eval_command(run_file: str, checkpoint: str | None, limit: int | None, full: bool, output: str | None) -> None:
        """Compute the metrics of every task in RUN.yaml that has eval data."""
        from blip2_runner.config import RunConfig
        from blip2_runner.trainer import evaluate

        if full and limit is not None:
            raise click.UsageError("give --limit N or --full, not both")
        run = RunConfig.from_file(run_file)
        results = evaluate(run, checkpoint, limit=sys.maxsize if full else limit)
        if _is_main():
            text = json.dumps(results, indent=2, sort_keys=True)
            click.echo(text)
            if output:
                from pathlib import Path

                from blip2_runner.checkpoint import atomic_write_text

                atomic_write_text(Path(output), text + "\n")


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


__all__ = ["add_commands"]
if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through the blip2 command: blip2 train RUN.yaml")
