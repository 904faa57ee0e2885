"""Randomly initialised parts (an untrained bridge, an encoder or LLM built without weights):
``spec.seed`` draws them the same on every load without touching the global random state, and
``Pipeline.save`` stores whatever a load could not draw again."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from blip2core import PipelineSpec, SpecError, load_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: every part random: no pretrained weights, no checkpoint
RANDOM_SPEC = {
    "vision": {"name": "eva-vit", "options": {"image_size": 32, "patch_size": 8, "hidden_size": 48,
                                              "num_hidden_layers": 1, "num_attention_heads": 4,
                                              "intermediate_size": 64}},
    "bridge": {"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 32, "num_hidden_layers": 1,
                                              "num_attention_heads": 4, "intermediate_size": 40}},
    "llm": {"name": "opt", "options": {"config": {
        "model_type": "opt", "vocab_size": 99, "hidden_size": 16, "word_embed_proj_dim": 16, "ffn_dim": 32,
        "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64, "init_std": 0.02}}},
}


def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def logits(pipe) -> torch.Tensor:
    ids = torch.randint(3, 99, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return pipe(pixels(), ids).logits


def same_logits(a, b) -> None:
    """Equal to float32 rounding: the weights are equal bit for bit (``same_weights``), but a reloaded
    pipeline's are memory-mapped at other addresses, and oneMKL's sums depend on the alignment."""
    torch.testing.assert_close(logits(a), logits(b), rtol=1e-5, atol=1e-6)


def same_weights(a, b) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def stored_keys(folder) -> set[str]:
    with safe_open(str(folder / "trainable.safetensors"), "pt") as f:
        return set(f.keys())


def test_a_seed_gives_the_same_parts_on_every_load_and_leaves_the_global_random_state_alone():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = load_pipeline({**RANDOM_SPEC, "seed": 7})
    assert torch.equal(torch.get_rng_state(), before)  # loading drew nothing from the caller's state
    torch.manual_seed(99)  # whatever the caller's state, the seed decides
    second = load_pipeline({**RANDOM_SPEC, "seed": 7})
    assert same_weights(first, second)
    assert torch.equal(logits(first), logits(second))
    other = load_pipeline({**RANDOM_SPEC, "seed": 8})
    assert not torch.equal(logits(first), logits(other))  # the seed matters: the check can fail


def test_each_part_has_its_own_stream():
    """The vision encoder's weights do not depend on which LLM or bridge follows it."""
    spec = {**RANDOM_SPEC, "seed": 3}
    smaller_bridge = {**spec, "bridge": {"name": "mlp-projector", "options": {"hidden_size": 20}}}
    a, b = load_pipeline(spec), load_pipeline(smaller_bridge)
    assert same_weights(a.vision, b.vision) and same_weights(a.llm, b.llm)


def test_the_seed_field_takes_a_non_negative_int_and_names_itself_otherwise():
    assert PipelineSpec.from_dict({**RANDOM_SPEC, "seed": 0}).seed == 0
    assert PipelineSpec.from_dict(RANDOM_SPEC).seed is None
    for value in (-1, "7", True, 1.5):
        with pytest.raises(SpecError, match=r"(?m)^seed: "):
            PipelineSpec.from_dict({**RANDOM_SPEC, "seed": value})


def test_saving_random_parts_without_a_seed_stores_them_and_the_saved_folder_loads_identically(tmp_path):
    pipe = load_pipeline(RANDOM_SPEC)
    saved = pipe.save(tmp_path / "random")
    keys = stored_keys(saved)
    assert {key.split(".", 1)[0] for key in keys} == {"vision", "bridge", "llm"}
    torch.manual_seed(4321)  # another global state than the first load's: nothing may come from it
    again = load_pipeline(saved)
    assert same_weights(pipe, again)
    same_logits(pipe, again)

    # saved again from the reloaded folder, the new folder holds them itself
    resaved = again.save(tmp_path / "again")
    shutil.rmtree(saved)
    third = load_pipeline(resaved)
    assert same_weights(pipe, third)


def test_saving_a_seeded_pipeline_stores_only_the_trainable_part(tmp_path):
    pipe = load_pipeline({**RANDOM_SPEC, "seed": 11})
    with torch.no_grad():  # stand-in for training: the bridge moves away from its seeded start
        for parameter in pipe.bridge.parameters():
            parameter.add_(0.01)
    saved = pipe.save(tmp_path / "seeded")
    assert stored_keys(saved) == set(pipe.trainable_state_dict())
    again = load_pipeline(saved)
    assert again.spec.seed == 11
    assert same_weights(pipe, again)
    same_logits(pipe, again)
