"""The ``standard`` preprocessor: images -> pixel_values [B, 3, S, S] float32, for any encoder config."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from blip2core.preprocess import decode, transforms
from blip2core.preprocess.errors import BatchLoadError, ImageLoadError
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess_config import PreprocessConfig
from blip2core.preprocess.sources import Source, flatten_inputs


class Failure(NamedTuple):
    """One input that could not be used: its position, its name (path, ``bytes[i]``, ``item i``), why."""

    index: int
    name: str
    message: str


@dataclass
class BatchResult:
    """What ``preprocess_batch`` made of a batch; bad inputs are reported, not raised.

    Attributes:
        pixel_values: [G, 3, S, S] float32 for the G inputs that loaded.
        indices: their positions in the (flattened) input batch, ascending.
        names: their names (path, URL, ``bytes[i]``, ``item i``).
        failures: one ``Failure(index, name, message)`` per input that did not load.
    """

    pixel_values: torch.Tensor
    indices: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def pin_memory(self) -> "BatchResult":
        """Called by a DataLoader with ``pin_memory=True``."""
        return BatchResult(self.pixel_values.pin_memory(), self.indices, self.names, self.failures)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "BatchResult":
        pixels = self.pixel_values.to(device, non_blocking=non_blocking)
        return BatchResult(pixels, self.indices, self.names, self.failures)


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class ImagePreprocessor:
    """Follows an encoder's ``PreprocessConfig``; implements the ``Preprocessor`` protocol.

    Attributes:
        config: the encoder's input contract (size S, mean/std, interpolation, resize mode).
        options: how inputs are read and which path (exact / fast) is used.
    """

    def __init__(
        self,
        config: PreprocessConfig | None = None,
        options: PreprocessOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.config = config if config is not None else PreprocessConfig()
        options = options if options is not None else PreprocessOptions()
        if overrides:  # ImagePreprocessor(cfg, mode="fast") is PreprocessOptions(mode="fast")
            options = PreprocessOptions.model_validate({**options.model_dump(), **overrides})
        self.options = options
        self.num_threads = self.options.num_threads or _default_threads()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"ImagePreprocessor(mode={self.options.mode!r}, image_size={c.image_size}, "
            f"resize_mode={c.resize_mode!r}, interpolation={c.interpolation!r})"
        )

    # ------------------------------------------------------------------------------- public
    def __call__(self, images: Any, *, train: bool = False) -> torch.Tensor:
        """images (paths, URLs, bytes, files, PIL, arrays, tensors) -> pixel_values [B, 3, S, S] float32.

        Raises:
            ImageLoadError: an input failed (``BatchLoadError`` listing all of them when several did).
        """
        sources = flatten_inputs(images)
        result, errors = self._run(sources, train)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BatchLoadError(result.failures, len(sources))
        return result.pixel_values

    def preprocess_batch(self, images: Any, *, train: bool = False) -> BatchResult:
        """Like ``__call__`` but never stops at a bad input: they are listed in ``failures``."""
        return self._run(flatten_inputs(images), train)[0]

    def load_uint8(self, source: Source | Any, *, train: bool = False, seed: int | None = None) -> torch.Tensor:
        """One input -> uint8 [3, S, S], resized (or augmented when ``train``), not normalised.

        ``seed`` fixes the augmentation; by default it is drawn from torch's global generator.
        Raises ImageLoadError.
        """
        if not isinstance(source, Source):
            flat = flatten_inputs(source)
            if len(flat) != 1:
                raise ValueError(f"load_uint8 takes one image, got {len(flat)}")
            source = flat[0]
        if train and seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        image = self._load_resized(source, seed if train else None).numpy()
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(image, (3, *image.shape[1:]))))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] on any device -> float32 [B, 3, S, S] normalised by the config."""
        return transforms.normalize(images, self.config)

    def close(self) -> None:
        """Stop the loader threads (they are restarted on the next call)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # ------------------------------------------------------------------------------ internals
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"], state["_pool_pid"], state["_pool_lock"] = None, None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # threads do not survive a fork
                self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="blip2-preprocess")
                self._pool_pid = os.getpid()
            return self._pool

    def _run(self, sources: list[Source], train: bool) -> tuple[BatchResult, list[Exception]]:
        """Each image is loaded, resized and normalised into its row of one preallocated
        [N, 3, S, S] tensor by the loader threads; rows of failed inputs are dropped at the end."""
        seeds: list[int | None] = [None] * len(sources)
        if train and sources:  # drawn here, in order, so threads cannot change the result
            seeds = torch.randint(0, 2**62, (len(sources),)).tolist()
        size = self.config.image_size
        out = torch.empty(len(sources), 3, size, size, dtype=torch.float32)
        rows = out.numpy()

        def work(index: int) -> Exception | None:
            try:
                image = self._load_resized(sources[index], seeds[index])
            except Exception as exc:  # one bad input must not stop the batch
                return exc
            transforms.normalize_into(image.numpy(), rows[index], self.config)
            return None

        if self.num_threads > 1 and len(sources) > 1:
            outcomes = list(self._executor().map(work, range(len(sources))))
        else:
            outcomes = [work(i) for i in range(len(sources))]
        result, errors, good = BatchResult(out), [], []
        for source, error in zip(sources, outcomes):
            if error is None:
                good.append(source.index)
                result.names.append(source.name)
                continue
            message = error.reason if isinstance(error, ImageLoadError) else f"{type(error).__name__}: {error}"
            result.failures.append(Failure(source.index, source.name, message))
            errors.append(error)
        result.indices = good
        if len(good) != len(sources):
            result.pixel_values = out[good]
        return result, errors

    def _load_resized(self, source: Source, seed: int | None) -> torch.Tensor:
        """-> uint8 [1 or 3, S, S] (1 = grey); ``seed`` None = eval transform, else the train augmentation."""
        config, options = self.config, self.options
        if options.mode == "exact":
            image = decode.load_pil(source, options)
            if seed is None:
                image = transforms.resize_pil(image, config)
            else:
                image = transforms.train_pil(image, config, self._crop(image.height, image.width, seed))
            return decode.pil_to_chw(image)
        tensor = decode.load_tensor(source, options)
        if seed is None:
            tensor = transforms.resize_tensor(tensor, config)
        else:
            tensor = transforms.train_tensor(tensor, config, self._crop(tensor.shape[-2], tensor.shape[-1], seed))
        return tensor

    def _crop(self, height: int, width: int, seed: int) -> transforms.TrainCrop:
        o = self.options
        generator = torch.Generator().manual_seed(seed)
        return transforms.sample_train_crop(height, width, generator, o.train_scale, o.train_ratio, o.train_hflip)


def build_standard_preprocessor(
    options: PreprocessOptions | None, *, preprocess_config: PreprocessConfig
) -> ImagePreprocessor:
    """The ``standard`` factory: ``factory(options, preprocess_config=encoder_config)``."""
    return ImagePreprocessor(preprocess_config, options)
