"""Which floating-point precision the frozen parts run in: the dtype names, ``dtype: auto`` and
native-support checks.

The one table of dtype names: ``DType`` (the ``Literal`` of options and specs), ``DTYPE_CHOICES``
(its values), ``CONCRETE_DTYPES`` (without ``auto``), ``TORCH_DTYPES`` (name -> ``torch.dtype``),
``torch_dtype(name)`` and ``dtype_name(dtype)``.

The rule ``auto`` follows (measured; see docs/quantization.md):

| device | resolves to |
|---|---|
| CUDA with bf16 support (compute capability >= 8.0) | bfloat16 |
| older CUDA | float16 |
| CPU with AMX (``amx_bf16``) or ``avx512_bf16`` | bfloat16 |
| any other CPU (AVX2 only, ...) | float32 |

On an AVX2-only CPU a bf16 matmul ran at ~1 GFLOP/s against ~165 GFLOP/s in fp32 (image encoding
0.42 vs 2.8 img/s), so asking for bf16 / fp16 there gives a warning naming that slowdown.
CPU flags come from ``/proc/cpuinfo`` (Linux); tests pass them in explicitly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import torch

#: what a user may write for a pipeline's or a component's precision (``auto``: see ``resolve_dtype``)
DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPE_CHOICES: tuple[str, ...] = get_args(DType)
#: the precisions ``auto`` resolves to, by name
CONCRETE_DTYPES: tuple[str, ...] = DTYPE_CHOICES[1:]
if TYPE_CHECKING:
    #: name -> ``torch.dtype``; built on first use, so importing this module does not import torch
    TORCH_DTYPES: dict[str, torch.dtype]
#: CPU flags that mean native bf16 matmuls (AMX tiles, or AVX-512 BF16 dot products)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: CPU flags that mean fp16 arithmetic in hardware (AMX-FP16, AVX-512 FP16)
FP16_CPU_FLAGS = ("amx_fp16", "avx512_fp16")
SLOWDOWN_NOTE = (
    "measured on an AVX2-only CPU: bf16 matmul ~1 GFLOP/s vs ~165 GFLOP/s in float32 (about 100x slower), "
    "image encoding 0.42 vs 2.8 img/s"
)


@functools.cache
def _torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {name: getattr(torch, name) for name in CONCRETE_DTYPES}


def __getattr__(name: str) -> Any:
    """``TORCH_DTYPES``, built (and torch imported) on first use (PEP 562)."""
    if name == "TORCH_DTYPES":
        return _torch_dtypes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_dtype(name: str) -> torch.dtype:
    """The ``torch.dtype`` of a name in ``TORCH_DTYPES`` (``"bfloat16"`` -> ``torch.bfloat16``).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    try:
        return _torch_dtypes()[name]
    except KeyError:
        raise ValueError(f"dtype {name!r}: expected {', '.join(CONCRETE_DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a ``torch.dtype`` in ``TORCH_DTYPES`` (``torch.float16`` -> ``"float16"``).

    Raises:
        ValueError: a dtype outside the table.
    """
    for name, known in _torch_dtypes().items():
        if known == dtype:
            return name
    raise ValueError(f"dtype {dtype}: expected one of {', '.join(CONCRETE_DTYPES)}")


class PrecisionWarning(UserWarning):
    """A precision was asked for that this device runs in software (slowly)."""


@dataclass(frozen=True)
class Resolution:
    """What a requested dtype became on a device, and why.

    Attributes:
        requested: the spec's value (``auto``, ``float32``, ``bfloat16``, ``float16``).
        dtype: the concrete dtype used.
        device: the device type (``cpu``, ``cuda``, ...).
        reason: one line, e.g. ``"cpu without avx512_bf16 / amx_bf16"``.
        native: False when ``dtype`` runs without hardware support on this device.
    """

    requested: str
    dtype: str
    device: str
    reason: str
    native: bool

    def describe(self) -> str:
        return f"{self.requested} -> {self.dtype} on {self.device} ({self.reason})"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cuda_capability(device: str) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, or None where CUDA is not available."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device if ":" in device else None)


def _device_type(device: str) -> str:
    return device.split(":", 1)[0] if device else "cpu"


def resolve_dtype(
    requested: str,
    device: str = "cpu",
    *,
    flags: Iterable[str] | None = None,
    capability: tuple[int, int] | None = None,
) -> Resolution:
    """Resolve ``auto`` (and check a concrete dtype) for ``device``.

    Args:
        requested: ``auto`` or one of CONCRETE_DTYPES.
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` ...
        flags: CPU flags (default: this machine's, from /proc/cpuinfo).
        capability: CUDA compute capability (default: asked from torch for ``device``).
    """
    if requested not in DTYPE_CHOICES:
        raise ValueError(f"dtype {requested!r}: expected auto, {', '.join(CONCRETE_DTYPES)}")
    kind = _device_type(device)
    if kind == "cuda":
        capability = capability if capability is not None else cuda_capability(device)
        bf16_ok = capability is not None and capability >= (8, 0)
        where = f"cuda capability {capability[0]}.{capability[1]}" if capability else "cuda"
        if requested == "auto":
            dtype = "bfloat16" if bf16_ok else "float16"
            why = "bf16 supported" if bf16_ok else "bf16 needs capability >= 8.0"
            return Resolution(requested, dtype, kind, f"{where}, {why}", True)
        native = requested != "bfloat16" or bf16_ok
        return Resolution(requested, requested, kind, where, native)
    if kind == "cpu":
        flags = frozenset(flags) if flags is not None else cpu_flags()
        bf16 = sorted(flags & set(BF16_CPU_FLAGS))
        fp16 = sorted(flags & set(FP16_CPU_FLAGS))
        if requested == "auto":
            if bf16:
                return Resolution(requested, "bfloat16", kind, f"cpu with {', '.join(bf16)}", True)
            return Resolution(requested, "float32", kind, "cpu without " + " / ".join(BF16_CPU_FLAGS), True)
        native = {"float32": True, "bfloat16": bool(bf16), "float16": bool(fp16)}[requested]
        have = ", ".join(bf16 + fp16) or "no " + " / ".join((*BF16_CPU_FLAGS, *FP16_CPU_FLAGS))
        return Resolution(requested, requested, kind, f"cpu ({have})", native)
    # mps and others: fp16 is native on Apple GPUs; keep auto conservative elsewhere
    if requested == "auto":
        dtype = "float16" if kind == "mps" else "float32"
        return Resolution(requested, dtype, kind, f"{kind} default", True)
    return Resolution(requested, requested, kind, kind, True)


def checked_dtype(requested: str, device: str = "cpu", *, what: str = "dtype") -> str:
    """The concrete dtype for ``requested`` on ``device``; warns (PrecisionWarning) when it has
    no hardware support there, naming the measured slowdown."""
    resolution = resolve_dtype(requested, device)
    if not resolution.native:
        warnings.warn(
            f"{what} {resolution.dtype} on {resolution.reason}: no native support, it runs far slower than "
            f"float32 ({SLOWDOWN_NOTE}); use dtype auto or float32 here",
            PrecisionWarning,
            stacklevel=3,
        )
    return resolution.dtype
