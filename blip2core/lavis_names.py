"""LAVIS BLIP-2 model names: which named model (preset) each LAVIS ``(name, model_type)`` is, and
the overrides users set (``register`` / ``BLIP2_LAVIS_MODELS``).

Used by the LAVIS-compatible entry point (``blip2core.compat.lavis``) and by presets registered
with ``lavis=(name, model_type)`` (``blip2core.loading``). Light: no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from blip2core.errors import Blip2Error

#: how a model is used: "opt" = image-to-text with an LLM (OPT or FlanT5); "qformer" = features / matching
Kind = Literal["opt", "qformer"]
ENV_VAR = "BLIP2_LAVIS_MODELS"


@dataclass(frozen=True)
class LavisModel:
    """What a LAVIS (name, model_type) is: the named model (preset) it loads, how it is used, its
    default caption prompt, or why blip2core cannot load it (``unsupported``)."""

    preset: str | None
    kind: Kind
    prompt: str = ""
    unsupported: str | None = None


_QFORMER_NAMES = ("blip2_feature_extractor", "blip2_image_text_matching", "blip2")
_POINT_ELSEWHERE = "point this name at a spec that loads the LAVIS .pth (register(...) or BLIP2_LAVIS_MODELS)"
_VIT_L = f"there is no Hugging Face checkpoint of the ViT-L Q-Former; {_POINT_ELSEWHERE}"
_VIT_L_T5 = f"there is no Hugging Face checkpoint of the ViT-L FlanT5-XL model; {_POINT_ELSEWHERE}"

#: LAVIS (name, model_type) -> preset (registered by blip2-opt, blip2-t5, blip2-llama and blip2-eva-clip:
#: ``blip2 models``); the InstructBLIP ones load HF ``instructblip`` folders
MODELS: dict[tuple[str, str], LavisModel] = {
    ("blip2_opt", "pretrain_opt2.7b"): LavisModel("blip2-opt-2.7b", "opt"),
    ("blip2_opt", "pretrain_opt6.7b"): LavisModel("blip2-opt-6.7b", "opt"),
    ("blip2_opt", "caption_coco_opt2.7b"): LavisModel("blip2-opt-2.7b-coco", "opt", "a photo of"),
    ("blip2_opt", "caption_coco_opt6.7b"): LavisModel("blip2-opt-6.7b-coco", "opt", "a photo of"),
    ("blip2_t5", "pretrain_flant5xl"): LavisModel("blip2-flan-t5-xl", "opt"),
    ("blip2_t5", "pretrain_flant5xxl"): LavisModel("blip2-flan-t5-xxl", "opt"),
    ("blip2_t5", "caption_coco_flant5xl"): LavisModel("blip2-flan-t5-xl-coco", "opt", "a photo of"),
    ("blip2_t5", "pretrain_flant5xl_vitL"): LavisModel(None, "opt", unsupported=_VIT_L_T5),
    ("blip2_vicuna_instruct", "vicuna7b"): LavisModel("instructblip-vicuna-7b", "opt"),
    ("blip2_vicuna_instruct", "vicuna13b"): LavisModel("instructblip-vicuna-13b", "opt"),
    ("blip2_t5_instruct", "flant5xl"): LavisModel("instructblip-flan-t5-xl", "opt"),
    ("blip2_t5_instruct", "flant5xxl"): LavisModel("instructblip-flan-t5-xxl", "opt"),
    ("blip2_feature_extractor", "pretrain"): LavisModel("blip2-feature-extractor", "qformer"),
    **{(name, "pretrain"): LavisModel("blip2-itm-vit-g", "qformer") for name in ("blip2_image_text_matching", "blip2")},
    **{(name, "coco"): LavisModel("blip2-itm-vit-g-coco", "qformer") for name in _QFORMER_NAMES},
    **{(name, "pretrain_vitL"): LavisModel(None, "qformer", unsupported=_VIT_L) for name in _QFORMER_NAMES},
}
#: LAVIS name -> kind, for names pointed at custom sources
KINDS: dict[str, Kind] = {"blip2_opt": "opt", "blip2_t5": "opt", "blip2_vicuna_instruct": "opt",
                          "blip2_t5_instruct": "opt", **{name: "qformer" for name in _QFORMER_NAMES}}

_REGISTERED: dict[tuple[str, str], str] = {}


def register(name: str, model_type: str, source: str | os.PathLike) -> None:
    """Make ``load_model_and_preprocess(name, model_type)`` load ``source`` (anything
    ``load_pipeline`` accepts) instead of its built-in preset."""
    _kind(name)
    _REGISTERED[(name, model_type)] = os.fspath(source)


def unregister(name: str, model_type: str) -> None:
    _REGISTERED.pop((name, model_type), None)


def resolve(name: str, model_type: str) -> tuple[str, Kind, str]:
    """(source for ``load_pipeline``, kind, default prompt) of a LAVIS name and model type."""
    known = MODELS.get((name, model_type))
    kind = known.kind if known is not None else _kind(name)
    prompt = known.prompt if known is not None else ""
    override = _REGISTERED.get((name, model_type)) or _env_overrides().get(f"{name}:{model_type}")
    if override is not None:
        return override, kind, prompt
    if known is None:
        types = sorted(t for n, t in MODELS if n == name)
        raise Blip2Error(f"LAVIS model {name!r} has no model_type {model_type!r}; known: {', '.join(types)}")
    if known.unsupported is not None or known.preset is None:
        raise Blip2Error(f"LAVIS model {name}/{model_type} cannot be loaded: {known.unsupported}")
    return known.preset, kind, prompt


def _kind(name: str) -> Kind:
    if name not in KINDS:
        names = sorted({n for n, _ in MODELS})
        raise Blip2Error(f"unknown LAVIS BLIP-2 model name {name!r}; known: {', '.join(names)}")
    return KINDS[name]


def _env_overrides() -> dict[str, str]:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return {}
    text = value if value.startswith("{") else None
    if text is None:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise Blip2Error(f"{ENV_VAR}={value}: neither a JSON object nor a readable JSON file ({exc})") from None
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Blip2Error(f"{ENV_VAR}: not valid JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise Blip2Error(f'{ENV_VAR}: expected a JSON object {{"name:model_type": "source", ...}}')
    return mapping


