"""What every measurement of the suite shares: the scale, device, rounds, photos and checkpoint folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmarks.checkpoints import SCALES, Scale, generation_folder, retrieval_folder


@dataclass
class Context:
    """Options of one suite run.

    ``rounds`` timed calls per variant after ``warmup`` untimed ones; ``quick`` shrinks the slow
    rows (fewer texts, photos, training steps; one timed call per side after a warm-up per model)
    but keeps every row's definition.
    """

    scale_name: str = "base"
    device: str = "cpu"
    dtype: str = "float32"  # the equal-dtype comparisons ("bfloat16" on a GPU)
    rounds: int = 5
    warmup: int = 1
    quick: bool = False
    cache_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> Scale:
        return SCALES[self.scale_name]

    @cached_property
    def generation_folder(self) -> Path:
        return generation_folder(self.scale_name, self.cache_dir, self.device)

    @cached_property
    def retrieval_folder(self) -> Path:
        return retrieval_folder(self.scale_name, self.cache_dir, self.device)

    @cached_property
    def photos(self) -> list[Any]:
        """Real photos (PIL RGB), decoded once: skimage astronaut, chelsea, coffee; sklearn china."""
        import skimage.data
        from PIL import Image
        from sklearn.datasets import load_sample_image

        arrays = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), load_sample_image("china.jpg")]
        return [Image.fromarray(array).convert("RGB") for array in arrays]

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def timing_options(self) -> dict[str, Any]:
        """Options of ``interleaved``: ``warmup`` untimed calls of each side first, except with
        ``quick``, where each model was warmed up once when it was loaded (``warm_up_rounds``)
        and every row times one call per side."""
        return {"warmup": 0 if self.quick else self.warmup, "sync": self.sync}

    @property
    def warm_up_rounds(self) -> int:
        """Calls a freshly loaded model makes before the quick rows (first-call costs: lazy imports,
        allocations): 1 with ``quick``, 0 otherwise (each row warms up itself)."""
        return 1 if self.quick else 0
