"""On-disk cache of the frozen vision encoder's outputs, so later epochs skip the ViT.

One safetensors file per image under ``<dir>/<namespace>/<xx>/<hash>.safetensors``. The namespace
hashes everything that determines the features: the vision component and its options, the
pipeline dtype and the preprocessing; a different encoder never reads another's features. Files
are written through a temp file + rename, so concurrent writers (several processes) and a killed
run leave either a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blip2core.plugin_api import atomic_file, torch_dtype


class FeatureCache:
    def __init__(self, root: Path | str, pipeline, dtype: str = "float32") -> None:
        spec = pipeline.spec
        preprocess = getattr(pipeline.preprocessor, "config", None)
        identity = {
            "vision": spec.vision.model_dump(mode="json"),
            "dtype": spec.dtype,
            "preprocess": repr(preprocess),
            "preprocessor": spec.preprocessor.model_dump(mode="json") if spec.preprocessor else None,
            "store_dtype": dtype,
        }
        self.namespace = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.root = Path(root) / self.namespace
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "identity.json").write_text(json.dumps(identity, indent=1, sort_keys=True))
        self.dtype = torch_dtype(dtype)
        self.hits = 0
        self.misses = 0

    def _path(self, image_ref: Any) -> Path:
        key = str(image_ref)
        try:
            stat = os.stat(key)
            key = f"{os.path.abspath(key)}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            pass
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, image_ref: Any) -> torch.Tensor | None:
        path = self._path(image_ref)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensor = load_file(str(path))["vision_tokens"]
        except (SafetensorError, OSError, KeyError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return tensor.float()

    def put(self, image_ref: Any, tokens: torch.Tensor) -> None:
        path = self._path(image_ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        # no fsync: a file torn by a crash fails to read, and ``get`` counts that as a miss
        with atomic_file(path, fsync=False) as tmp:
            save_file({"vision_tokens": tokens.detach().to("cpu", self.dtype).contiguous()}, str(tmp))
