"""What a benchmark ran on: CPU model and its vector / matrix flags, threads, library versions, load."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

#: the lscpu flags that decide matmul speed per dtype
MATMUL_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "vnni")


def lscpu_fields() -> dict[str, str]:
    """lscpu's ``name: value`` lines ({} where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def cpu_model() -> str:
    return lscpu_fields().get("Model name") or platform.processor() or platform.machine()


def matmul_flags() -> list[str]:
    """The CPU's avx* / amx* / fma / f16c / *vnni* flags, in lscpu's order."""
    return [flag for flag in lscpu_fields().get("Flags", "").split() if flag.startswith(MATMUL_FLAG_PREFIXES)]


def cpu_summary() -> str:
    """One line: model, CPU count and matmul flags (for scripts that print their context)."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs; flags: {' '.join(matmul_flags()) or '-'}"


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe(device: str = "cpu") -> dict[str, Any]:
    """The machine as a JSON-ready dict (versions, threads, load average now)."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "flags": matmul_flags(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from blip2core.precision import resolve_dtype

    info["dtype_auto"] = resolve_dtype("auto", device).describe()
    return info
