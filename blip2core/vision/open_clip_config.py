"""Reading open_clip model configs and preprocessing without building or downloading a model.

open_clip is not a dependency of blip2core: it is imported inside the functions that need it,
so only plugins that call them (and install ``open_clip_torch``) need it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blip2core.errors import SpecError
from blip2core.preprocess_config import PreprocessConfig

logger = logging.getLogger(__name__)

_INTERPOLATIONS = {"bicubic", "bilinear", "nearest", "lanczos"}
#: legacy per-model preprocessing fields of an open_clip vision config -> PreprocessCfg fields
_VISION_CFG_FIELDS = {"image_mean": "mean", "image_std": "std", "image_interpolation": "interpolation",
                      "image_resize_mode": "resize_mode"}


def open_clip_model_config(model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, preprocess overlay) of a built-in open_clip name or a ``local-dir:`` folder.

    Raises:
        SpecError: unknown name, missing folder config, or an ``hf-hub:`` name (needs a network).
    """
    import open_clip

    if model_name.startswith("local-dir:"):
        path = Path(model_name[len("local-dir:"):]).expanduser() / "open_clip_config.json"
        if not path.is_file():
            raise SpecError(f"open_clip model {model_name!r}: {path} not found")
        raw = json.loads(path.read_text())
        return raw.get("model_cfg", raw), dict(raw.get("preprocess_cfg", {}))
    if model_name.startswith("hf-hub:"):
        raise SpecError(
            f"open_clip model {model_name!r}: hub models need a network; download the repository and "
            f"name it as local-dir:/path/to/it"
        )
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise SpecError(f"unknown open_clip model {model_name!r}; known: {', '.join(open_clip.list_models())}")
    return config, {}


def open_clip_preprocess_config(
    overlay: Mapping[str, Any], vision_cfg: Mapping[str, Any], image_size: int
) -> PreprocessConfig:
    """open_clip's defaults (OpenAI mean/std, bicubic, resize the short side then centre-crop), with
    the vision config's ``image_mean``/... fields and the folder's ``preprocess_cfg`` on top."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    legacy = {new: vision_cfg[old] for old, new in _VISION_CFG_FIELDS.items() if vision_cfg.get(old) is not None}
    cfg = merge_preprocess_dict(merge_preprocess_dict(PreprocessCfg(), legacy), dict(overlay))
    interpolation = cfg["interpolation"] if cfg["interpolation"] in _INTERPOLATIONS else "bicubic"
    if cfg["resize_mode"] == "squash":
        resize_mode = "squash"
    else:
        if cfg["resize_mode"] != "shortest":  # "longest" pads; PreprocessConfig has no equivalent
            logger.warning("open_clip resize_mode %r approximated by shortest_edge_crop", cfg["resize_mode"])
        resize_mode = "shortest_edge_crop"
    return PreprocessConfig(
        image_size=image_size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=interpolation,
        resize_mode=resize_mode,
        crop_pct=1.0,
    )


def image_side(size: int | list[int] | tuple[int, ...]) -> int:
    """S of an open_clip ``image_size`` (an int or a square (H, W))."""
    return int(size if isinstance(size, int) else size[0])
