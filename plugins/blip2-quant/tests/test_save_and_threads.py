"""A quantized pipeline saves (spec + bridge weights), loads back with the same outputs, and serves
several threads at once."""

from __future__ import annotations

import threading

import pytest
import torch

from blip2core import load_pipeline
from blip2core.checkpoints.files import read_state_dict


def outputs(pipe, inputs):
    with torch.no_grad():
        return pipe(*inputs).logits, pipe.encode_images(inputs[0]).query_output


def test_a_quantized_random_part_without_a_seed_is_refused_at_save(build, tmp_path):
    pipe = build(quantize={"llm": "int8-weight-only"})
    with pytest.raises(Exception, match=r"set 'seed' in the spec, or save the pipeline before quantizing"):
        pipe.save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "pipeline.yaml").exists()


@pytest.mark.parametrize("quantize", [
    {"vision": "int8-dynamic", "llm": "int8-weight-only"},
    {"llm": {"name": "int4-weight-only", "options": {"include_embeddings": True}}},
    {"bridge": "int4-weight-only", "llm": "int8-dynamic"},
    {"bridge": "int8-weight-only"},
])
def test_saved_quantized_pipeline_loads_back_with_the_same_outputs(make_spec, inputs, tmp_path, quantize):
    # random frozen parts are re-created from the spec's seed at load (without one, save refuses a
    # quantized random part: it could be neither rebuilt nor stored)
    pipe = load_pipeline(make_spec(seed=0), quantize=quantize)
    pipe.save(tmp_path / "saved")
    tensors = read_state_dict(tmp_path / "saved" / "trainable.safetensors")
    assert all(t.dtype == torch.float32 and type(t) is torch.Tensor for t in tensors.values())  # dequantised
    assert set(tensors) == {f"bridge.{k}" for k in load_pipeline(make_spec(seed=0)).bridge.state_dict()}
    again = load_pipeline(tmp_path / "saved")
    assert again.spec.quantize == pipe.spec.quantize
    logits, query = outputs(pipe, inputs)
    logits2, query2 = outputs(again, inputs)
    # the bridge's saved weights are its dequantised ones; quantizing those again gives the same codes
    # and scales (up to float rounding), the frozen parts are rebuilt and quantized as before
    assert torch.allclose(query, query2, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits, logits2, atol=1e-4, rtol=1e-5)


def test_quantized_pipeline_is_thread_safe(build, inputs):
    pipe = build(quantize={"vision": "int8-dynamic", "bridge": "bf16", "llm": "int4-weight-only"})
    generator = torch.Generator().manual_seed(5)
    batches = [(torch.randn(1, 3, 32, 32, generator=generator), torch.randint(3, 320, (1, 5), generator=generator))
               for _ in range(6)]
    expected = [outputs(pipe, batch)[0] for batch in batches]
    results: dict[int, torch.Tensor] = {}

    def work(index: int) -> None:
        for _ in range(3):
            results[index] = outputs(pipe, batches[index])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, logits in enumerate(expected):
        assert torch.equal(results[index], logits)
