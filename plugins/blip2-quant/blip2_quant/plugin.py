"""Registers the quantizers and ``blip2 quantize-report``. Light on purpose: torch, torchao and
torch.ao load when a quantizer is built or the command runs."""

from __future__ import annotations

from blip2core import hookimpl
from blip2_quant.options import CastOptions, Int4WeightOnlyOptions, Int8DynamicOptions, Int8WeightOnlyOptions


def _lazy(name: str):
    def factory(options):
        from blip2_quant import methods

        return getattr(methods, name)(options)

    factory.__name__ = name
    return factory


@hookimpl
def register_quantizers(register):
    register("none", _lazy("build_none"), options=CastOptions, description="leave the component as it is")
    register("bf16", _lazy("build_bf16"), options=CastOptions,
             description="bfloat16 weights (fast on CUDA >= 8.0 and CPUs with AMX / avx512_bf16 only)")
    register("fp16", _lazy("build_fp16"), options=CastOptions, description="float16 weights (CUDA)")
    register("int8-dynamic", _lazy("build_int8_dynamic"), options=Int8DynamicOptions,
             description="int8 weights and activations in Linear layers (torch.ao on CPU, torchao on CUDA)")
    register("int8-weight-only", _lazy("build_int8_weight_only"), options=Int8WeightOnlyOptions,
             description="int8 Linear weights, per-channel scales (torchao)")
    register("int4-weight-only", _lazy("build_int4_weight_only"), options=Int4WeightOnlyOptions,
             description="4-bit Linear weights, two per byte, per-group scale and offset (plain torch)")


@hookimpl
def register_commands(cli):
    from blip2_quant.cli import quantize_report_command

    cli.add_command(quantize_report_command)
