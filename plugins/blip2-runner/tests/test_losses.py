"""The four losses on a tiny real pipeline (eva-vit + qformer + opt), checked against direct
computations from the components' own methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blip2_runner.config import DatasetConfig
from blip2_runner.data import load_dataset
from blip2_runner.losses import (
    BatchContext,
    ITCLoss,
    ITGLoss,
    ITMLoss,
    LMLoss,
    _sample_negatives,
    build_lm_inputs,
    positive_mask,
)


@pytest.fixture(scope="module")
def pipeline(make_tiny_pipeline):
    return make_tiny_pipeline()


@pytest.fixture(scope="module")
def examples():
    return load_dataset("e", DatasetConfig(format="easy-vqa", split="test", limit=40)).examples[::5]  # 8 images


def make_batch(pipeline, examples, **extra):
    pixels = pipeline.preprocessor([e["image"] for e in examples], train=False)
    return {"pixel_values": pixels, "text_input": [e["caption"] for e in examples],
            "prompt": [f"Question: {e['question']} Answer:" for e in examples],
            "target": [e["answer"] for e in examples], **extra}


def test_lm_loss_equals_the_pipelines_own_labelled_forward(pipeline, examples):
    batch = make_batch(pipeline, examples)
    loss = LMLoss()(pipeline, batch)
    ids, mask, labels, keep = build_lm_inputs(pipeline.llm, batch["prompt"], batch["target"], 64, 32)
    assert (labels[:, : labels.shape[1] - keep] == -100).all() and (labels[:, labels.shape[1] - keep :] != -100).any(dim=1).all()
    # labels cover only the answer and its end token ("\n" for OPT)
    newline = pipeline.llm.tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    for row_ids, row_labels in zip(ids, labels):
        kept = row_ids[row_labels != -100].tolist()
        assert kept[-1] == newline and len(kept) >= 2
    reference = pipeline(batch["pixel_values"], ids, mask, labels=labels).loss
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_lm_loss_on_a_conversation_reads_the_prompt_pipe_chat_gives_the_llm(pipeline, examples):
    from blip2core.plugin_api import chat_prompt

    conversations = [[{"role": "user", "content": e["question"]}] for e in examples]
    as_chat = make_batch(pipeline, examples, messages=conversations, instruction=[e["question"] for e in examples])
    del as_chat["prompt"]
    written = make_batch(pipeline, examples, prompt=[chat_prompt(pipeline.llm.tokenizer, c) for c in conversations],
                         instruction=[e["question"] for e in examples])
    assert torch.allclose(LMLoss()(pipeline, as_chat), LMLoss()(pipeline, written))  # no chat template: Q/A form


def test_chat_prompts_keep_their_end_when_too_long(pipeline):
    llm = pipeline.llm
    prompt = " ".join(["word"] * 40) + " Question: what colour? Answer:"
    plain, _, _, _ = build_lm_inputs(llm, [prompt], ["red"], max_prompt=8, max_target=4)
    chat, _, _, _ = build_lm_inputs(llm, [prompt], ["red"], max_prompt=8, max_target=4, chat_prompts=True)
    full = llm.tokenizer(prompt)["input_ids"]
    assert plain[0, :8].tolist() == full[:8]  # a plain prompt keeps its start
    assert chat[0, :8].tolist() == full[-8:]  # a conversation keeps the question and the answer cue


def test_itg_loss_is_label_smoothed_next_token_ce_with_the_decoder_bos(pipeline, examples):
    batch = make_batch(pipeline, examples)
    loss = ITGLoss()(pipeline, batch)
    bridge = pipeline.bridge
    enc = bridge.tokenizer(batch["text_input"], padding="longest", truncation=True, max_length=32, return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = bridge.tokenizer.bos_token_id  # "[DEC]"
    assert bridge.tokenizer.convert_ids_to_tokens(int(ids[0, 0])) == "[DEC]"
    logits = bridge.itg_logits(pipeline.vision(batch["pixel_values"]).float(), ids, enc["attention_mask"])
    labels = ids.masked_fill(enc["attention_mask"] == 0, -100)[:, 1:]
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_itc_loss_is_max_over_queries_with_temperature_and_smoothing(pipeline, examples):
    batch = make_batch(pipeline, examples)
    loss = ITCLoss()(pipeline, batch)
    bridge = pipeline.bridge
    tokens = pipeline.vision(batch["pixel_values"]).float()
    enc = bridge.tokenizer(batch["text_input"], padding="longest", truncation=True, max_length=32, return_tensors="pt")
    image = bridge.image_embeds_proj(bridge.encode_queries(tokens))
    text = bridge.text_embeds_proj(bridge.text_features(enc["input_ids"], enc["attention_mask"]))
    sim = torch.stack([(image[i] @ text.T).max(dim=0).values for i in range(len(examples))]) / bridge.temp
    target = torch.arange(len(examples))
    expected = (F.cross_entropy(sim, target, label_smoothing=0.1) + F.cross_entropy(sim.T, target, label_smoothing=0.1)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # equal match keys make positives: two examples sharing a key each get half the target mass
    keys = [("a",), ("a",)] + [(str(i),) for i in range(2, len(examples))]
    mask = positive_mask({"match_key": keys}, len(examples), torch.device("cpu"))
    assert mask[0, 1] and mask[1, 0] and mask.sum() == len(examples) + 2


def test_itm_negatives_are_never_positives_and_do_not_depend_on_the_split():
    torch.manual_seed(0)
    sim = torch.randn(8, 8) * 3
    positives = torch.eye(8, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    whole = _sample_negatives(sim, positives, BatchContext(step=5, seed=1, offset=0, global_size=8), "i2t")
    assert not positives[torch.arange(8), whole].any()
    halves = torch.cat([
        _sample_negatives(sim[:4], positives[:4], BatchContext(step=5, seed=1, offset=0, global_size=8), "i2t"),
        _sample_negatives(sim[4:], positives[4:], BatchContext(step=5, seed=1, offset=4, global_size=8), "i2t"),
    ])
    assert torch.equal(whole, halves)  # 2 processes with 4 rows each draw what 1 process with 8 draws
    draws = torch.stack([_sample_negatives(sim, positives, BatchContext(step=s, seed=1, global_size=8), "i2t")
                         for s in range(300)])
    assert torch.equal(draws[5], whole) and (draws != whole).any()  # seeded by the step
    assert not positives[torch.arange(8).expand(300, -1), draws].any()
    # hard negatives: the most similar non-positive column is drawn most often
    row = 2
    candidates = sim[row].masked_fill(positives[row], float("-inf"))
    counts = torch.bincount(draws[:, row], minlength=8)
    assert counts.argmax() == candidates.argmax()


def test_itm_loss_and_gradients_reach_only_the_bridge(pipeline, examples):
    batch = make_batch(pipeline, examples, context=BatchContext(step=0, global_size=len(examples)))
    pipeline.zero_grad(set_to_none=True)
    total = ITCLoss()(pipeline, batch) + ITMLoss()(pipeline, batch) + ITGLoss()(pipeline, batch) + LMLoss()(pipeline, batch)
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is None for p in pipeline.vision.parameters())
    assert all(p.grad is None for p in pipeline.llm.parameters())
    grads = {n for n, p in pipeline.bridge.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"query_tokens", "temp", "itm_head.weight", "llm_projection.weight"} <= grads
    pipeline.zero_grad(set_to_none=True)


def test_losses_run_under_bf16_autocast(pipeline, examples):
    batch = make_batch(pipeline, examples)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [fn(pipeline, batch) for fn in (ITCLoss(), ITMLoss(), ITGLoss(), LMLoss())]
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in values)
