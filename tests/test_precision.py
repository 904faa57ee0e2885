"""``dtype: auto`` and native-precision checks (blip2core.precision) on faked CPU flags and CUDA
capabilities; the spec and load_pipeline accept ``auto``."""

from __future__ import annotations

import warnings

import pytest

from blip2core import precision
from blip2core.precision import PrecisionWarning, checked_dtype, resolve_dtype
from blip2core.spec import PipelineSpec

AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"}
COOPER_LAKE = AVX2 | {"avx512f", "avx512_bf16"}


@pytest.mark.parametrize("device,flags,capability,expected", [
    ("cpu", AVX2, None, "float32"),
    ("cpu", SAPPHIRE_RAPIDS, None, "bfloat16"),
    ("cpu", COOPER_LAKE, None, "bfloat16"),
    ("cpu", AVX2 | {"amx_bf16"}, None, "bfloat16"),
    ("cpu", set(), None, "float32"),
    ("cuda", None, (9, 0), "bfloat16"),
    ("cuda:1", None, (8, 0), "bfloat16"),
    ("cuda", None, (7, 5), "float16"),
    ("cuda", None, (6, 1), "float16"),
])
def test_auto_rule(device, flags, capability, expected):
    resolution = resolve_dtype("auto", device, flags=flags, capability=capability)
    assert resolution.dtype == expected and resolution.native
    assert resolution.describe().startswith(f"auto -> {expected} on {device.split(':')[0]} (")


def test_explicit_dtypes_report_native_support():
    assert not resolve_dtype("bfloat16", "cpu", flags=AVX2).native
    assert not resolve_dtype("float16", "cpu", flags=COOPER_LAKE).native
    assert resolve_dtype("float16", "cpu", flags=SAPPHIRE_RAPIDS).native
    assert resolve_dtype("bfloat16", "cpu", flags=COOPER_LAKE).native
    assert not resolve_dtype("bfloat16", "cuda", capability=(7, 0)).native
    assert resolve_dtype("float32", "cpu", flags=set()).native
    with pytest.raises(ValueError, match=r"dtype 'float8': expected auto, float32, bfloat16, float16"):
        resolve_dtype("float8")


def test_bf16_on_an_avx2_cpu_warns_with_the_measured_slowdown(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(AVX2))
    with pytest.warns(PrecisionWarning, match=r"bfloat16 on cpu.*no native support.*1 GFLOP/s vs ~165 GFLOP/s"):
        assert checked_dtype("bfloat16", "cpu") == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checked_dtype("auto", "cpu") == "float32"
        assert checked_dtype("float32", "cpu") == "float32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(SAPPHIRE_RAPIDS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checked_dtype("bfloat16", "cpu") == "bfloat16"
        assert checked_dtype("auto", "cpu") == "bfloat16"


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)  # empty off Linux; on Linux x86 it holds at least sse2
    assert not flags or "sse2" in flags or "fp" in flags


TINY = {
    "vision": {"name": "timm", "options": {"model_name": "vit_tiny_patch16_224", "image_size": 32,
                                           "model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}},
    "bridge": {"name": "qformer", "options": {"num_query_tokens": 2, "hidden_size": 32, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "intermediate_size": 64}},
}


@pytest.mark.parametrize("flags,expected", [(AVX2, "float32"), (SAPPHIRE_RAPIDS, "bfloat16")])
def test_spec_dtype_auto_composes_in_what_it_resolves_to(monkeypatch, flags, expected):
    import torch

    from blip2core import load_pipeline

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    spec = PipelineSpec.from_dict({**TINY, "dtype": "auto"})
    assert spec.dtype == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        pipe = load_pipeline(spec)
    assert pipe.spec.dtype == expected  # the composed pipeline records the concrete dtype
    assert pipe.vision_dtype == getattr(torch, expected)
    assert next(pipe.bridge.parameters()).dtype == torch.float32
    assert load_pipeline(TINY, dtype="auto").spec.dtype == expected
