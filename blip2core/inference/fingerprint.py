"""What a pipeline's image features depend on, as three short digests: spec, weights, preprocessing.

A feature file stores the fingerprint of the pipeline that wrote it, so that a resumed run with
another pipeline is refused instead of appending another model's features to the old ones.

- ``spec``: the canonical JSON of the spec parts image features come from (``vision``,
  ``bridge``, ``preprocessor``, the ``vision`` / ``bridge`` quantizers) and the dtypes the vision
  encoder and bridge really run in. Left out: ``weights`` (the weights digest covers what they
  hold, wherever they are), ``llm``, ``styles``, ``image_token_id``, ``device``; an option
  naming an existing file or folder (e.g. the tokenizer's) counts as ``"<path>"``, so a model
  folder that moved is still the same pipeline.
- ``weights``: SHA-256 over the vision encoder's and the bridge's state-dict tensors, as loaded
  (names, dtypes, shapes, bytes), of the sub-modules that image features run through: one probe
  image (zeros) goes through them first, with hooks noting which sub-modules ran. Heads they
  never use are left out (the Q-Former's text side, and its ITG ``lm_head``, which a Hugging Face
  checkpoint does not store, so it is drawn anew on each load). A part image features use that
  is randomly initialised is drawn anew on each load too, so two loads of such a spec differ
  here, as their features do.
- ``preprocessing``: the preprocessor's ``PreprocessConfig`` (size, mean, std, resize) and its
  options that change pixels (``PIXEL_OPTIONS``: mode, background, EXIF).

Each digest is the first 16 hex digits of a SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from blip2core.preprocess.options import PIXEL_OPTIONS

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

DIGITS = 16


@dataclass(frozen=True)
class Fingerprint:
    """Digests of what a pipeline's image features depend on (see the module docstring)."""

    spec: str
    weights: str
    preprocessing: str

    def __str__(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        """Raises ValueError when ``text`` is not a fingerprint's JSON."""
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"expected a JSON object with string fields {sorted(names)}")
        return cls(**data)

    def differences(self, other: Fingerprint) -> list[str]:
        """The names of the digests that differ from ``other``'s."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def pipeline_fingerprint(pipe: Pipeline) -> Fingerprint:
    """The fingerprint of a loaded pipeline's image features; hashes the vision and bridge
    tensors once (on their device's host copy, one tensor at a time)."""
    modules = {"vision": pipe.vision, "bridge": pipe.bridge}
    used = _modules_image_features_run(pipe)
    return Fingerprint(
        spec=_digest_json(_spec_part(pipe)),
        weights=_digest_tensors(modules, used),
        preprocessing=_digest_json(_preprocessing_part(pipe.preprocessor)),
    )


def _modules_image_features_run(pipe: Pipeline) -> set[torch.nn.Module] | None:
    """The sub-modules of the vision encoder and the bridge that one probe image (zeros
    [1, 3, S, S]) runs through, with every ancestor of each; None (= all) when the input size S
    is unknown."""
    from blip2core.inference.features import features_from_pixels

    config = getattr(pipe.vision, "preprocess_config", None) or getattr(pipe.preprocessor, "config", None)
    size = getattr(config, "image_size", None)
    if not isinstance(size, int):
        return None
    ran: set[torch.nn.Module] = set()
    handles = [module.register_forward_pre_hook(lambda module, _: ran.add(module))
               for root in (pipe.vision, pipe.bridge) for module in root.modules()]
    try:
        with torch.no_grad():
            features_from_pixels(pipe, torch.zeros(1, 3, size, size), [], "image")
    finally:
        for handle in handles:
            handle.remove()
    used: set[torch.nn.Module] = set()
    for root in (pipe.vision, pipe.bridge):
        for name, module in root.named_modules():
            if module in ran:  # it and its ancestors
                path = name.split(".") if name else []
                used.update(root.get_submodule(".".join(path[:depth])) for depth in range(len(path) + 1))
    return used


def _spec_part(pipe: Pipeline) -> dict[str, Any]:
    spec = _without_paths(pipe.spec.model_dump(mode="json"))
    return {
        "vision": spec["vision"],
        "bridge": spec["bridge"],
        "preprocessor": spec["preprocessor"],
        "quantize": {k: v for k, v in spec["quantize"].items() if k in ("vision", "bridge")},
        "dtypes": {"vision": str(_module_dtype(pipe.vision)), "bridge": str(_module_dtype(pipe.bridge))},
    }


def _without_paths(value: Any) -> Any:
    """``value`` (JSON data) with every string that names an existing file or folder as "<path>"."""
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_paths(item) for item in value]
    if isinstance(value, str) and value and os.path.exists(value):
        return "<path>"
    return value


def _module_dtype(module: torch.nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _preprocessing_part(preprocessor: Any) -> dict[str, Any]:
    if preprocessor is None:
        return {}
    part: dict[str, Any] = {"type": f"{type(preprocessor).__module__}.{type(preprocessor).__qualname__}"}
    for attribute in ("config", "options"):
        value = getattr(preprocessor, attribute, None)
        if hasattr(value, "model_dump"):
            dumped = value.model_dump(mode="json")
            part[attribute] = {k: v for k, v in dumped.items() if attribute != "options" or k in PIXEL_OPTIONS}
    return part


def _digest_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGITS]


def _digest_tensors(modules: dict[str, torch.nn.Module], used: set[torch.nn.Module] | None) -> str:
    """SHA-256 of the state-dict entries whose owning sub-module is in ``used`` (all when None)."""
    hasher = hashlib.sha256()
    for prefix, module in modules.items():
        state = module.state_dict(keep_vars=False)
        for name in sorted(state):
            owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            if used is not None and owner not in used:
                continue
            hasher.update(f"{prefix}.{name}\0".encode())
            _hash_value(hasher, state[name])
    return hasher.hexdigest()[:DIGITS]


def _hash_value(hasher: Any, value: Any) -> None:
    """Feed one state-dict value: a tensor (plain, quantized, or a subclass such as torchao's
    that flattens into plain tensors), or a tuple / list of them (torch.ao packed params)."""
    if isinstance(value, (tuple, list)):
        for item in value:
            _hash_value(hasher, item)
        return
    if not isinstance(value, torch.Tensor):
        hasher.update(repr(value).encode() if isinstance(value, (int, float, str, bool, type(None))) else b"?")
        return
    hasher.update(f"{value.dtype}{list(value.shape)}\0".encode())
    if type(value) not in (torch.Tensor, torch.nn.Parameter) and hasattr(value, "__tensor_flatten__"):
        inner, _ = value.__tensor_flatten__()
        for attribute in inner:
            _hash_value(hasher, getattr(value, attribute))
        return
    if value.is_quantized:
        scales = value.q_per_channel_scales() if value.qscheme() in _PER_CHANNEL else torch.tensor(value.q_scale())
        for part in (value.int_repr(), scales):
            _hash_value(hasher, part)
        return
    data = value.detach().to("cpu").contiguous().reshape(-1)
    hasher.update(memoryview(data.view(torch.uint8).numpy()))


_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
