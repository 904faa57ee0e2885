"""One table of dtype names (``blip2core.precision``), used by every place that names a precision."""

from __future__ import annotations

import typing

import click
import pytest
import torch

from blip2core import plugin_api
from blip2core.cli.inference_commands import model_options
from blip2core.llm.options import TorchDType
from blip2core.precision import CONCRETE_DTYPES, DTYPE_CHOICES, TORCH_DTYPES, DType, dtype_name, torch_dtype
from blip2core.spec import DType as SpecDType


def test_names_and_torch_dtypes_go_both_ways():
    assert TORCH_DTYPES == {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    assert DTYPE_CHOICES == ("auto", *CONCRETE_DTYPES)
    for name, dtype in TORCH_DTYPES.items():
        assert torch_dtype(name) is dtype and dtype_name(dtype) == name


def test_unknown_names_and_dtypes_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"dtype 'int8': expected float32, bfloat16, float16"):
        torch_dtype("int8")
    with pytest.raises(ValueError, match=r"dtype torch\.int8: expected one of float32, bfloat16, float16"):
        dtype_name(torch.int8)


def test_options_specs_the_cli_and_the_sdk_offer_the_same_names():
    assert typing.get_args(TorchDType) == typing.get_args(DType) == DTYPE_CHOICES
    assert typing.get_args(SpecDType) == DTYPE_CHOICES

    @click.command()
    @model_options
    def command(**kwargs):
        pass

    dtype_option = next(p for p in command.params if p.name == "dtype")
    assert tuple(dtype_option.type.choices) == DTYPE_CHOICES
    assert plugin_api.torch_dtype is torch_dtype and plugin_api.DTYPE_CHOICES is DTYPE_CHOICES
