"""Copy a trained `mini` checkpoint into this package: ``python -m blip2_mini.export CHECKPOINT RECIPE [--name mini-chat]``.

CHECKPOINT: a run folder (its newest checkpoint), a ``step-*`` folder or a ``trainable.safetensors``.
RECIPE: the RUN.yaml it was trained with; its pipeline spec goes into ``weights/mini.json``. The
trainable tensors are stored as float16 (``--dtype float32`` keeps them as they are).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from blip2core.plugin_api import torch_dtype

from blip2_mini.model import MODELS, WEIGHTS_DIR, card_file, weights_file


def export(checkpoint: str | Path, recipe: str | Path, dtype: str = "float16", name: str = "mini") -> Path:
    from blip2_runner.checkpoint import load_trainable, resolve_checkpoint
    from blip2_runner.config import RunConfig

    run = RunConfig.from_file(recipe)
    folder = resolve_checkpoint(checkpoint)
    tensors = load_trainable(folder)
    cast = torch_dtype(dtype)
    stored = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    weights, card_path = weights_file(name), card_file(name)
    save_file(stored, str(weights), metadata={"format": "blip2core-native", "dtype": dtype})
    spec = run.pipeline_spec().model_dump(mode="json", exclude_defaults=True)
    spec.pop("weights", None)
    state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").is_file() else {}
    card = {"pipeline": spec,
            "source": {"recipe": Path(recipe).name, "checkpoint": folder.name, "step": state.get("step"),
                       "stored_dtype": dtype}}
    if card_path.is_file():  # keep the measured evaluation, if any
        card["eval"] = json.loads(card_path.read_text()).get("eval", {})
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("recipe")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--name", choices=MODELS, default="mini", help="which shipped model to replace")
    args = parser.parse_args()
    path = export(args.checkpoint, args.recipe, args.dtype, args.name)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {card_file(args.name)}")


if __name__ == "__main__":
    main()
