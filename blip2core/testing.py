"""Helpers for the tests of blip2core plugins: install with ``pip install "blip2core[test]"``.

What transformers' ``testing_utils`` is to model authors, for plugin authors:

- ``save_tiny_tokenizer(folder)``: a real byte-level BPE tokenizer trained in milliseconds with no
  download, whose small vocabulary fits tiny random language models.
- ``save_tiny_t5_tokenizer(folder)``: the same for T5 / FlanT5: a SentencePiece-style Unigram
  vocabulary in transformers' ``T5Tokenizer`` (pad 0, ``</s>`` 1 appended, unk 2, no BOS).
- ``save_hf_blip2_folder(folder, text_config)``: a random, tiny Hugging Face
  ``Blip2ForConditionalGeneration`` around any transformers text model, written with
  ``save_pretrained``: what ``load_pipeline`` must load once your plugin claims the text
  model's ``model_type`` (hook ``register_hf_configs``); transformers' own outputs are the oracle.
- ``save_hf_instructblip_folder(folder, text_config)``: the same for InstructBLIP
  (``InstructBlipForConditionalGeneration``); the folder's tokenizers are the caller's to write
  (``InstructBlipProcessor.save_pretrained``: the LLM's at the top, a BERT one in ``qformer_tokenizer/``).
- ``tiny_blip2_config(text_config, ...)``: the ``Blip2Config`` of that folder, for other BLIP-2
  model classes (``Blip2ForImageTextRetrieval``).
- ``check_vision_encoder(encoder)``: the ``VisionEncoder`` contract, checked on random pixels.

These need only blip2core's own dependencies plus ``tokenizers``; nothing here imports pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TINY_CORPUS = (
    "a photo of a cat sitting on a mat",
    "the capital of france is paris",
    "question: what colour is the dog? answer: brown\n",
    "two people riding bikes down a street\n",
)

#: OPT's special-token ids: <s>=0, <pad>=1, </s>=2, <unk>=3
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def save_tiny_tokenizer(folder: str | Path, vocab_size: int = 320, *, bos: str = "</s>", add_bos: bool = True) -> Path:
    """Write a byte-level BPE tokenizer (``vocab_size`` >= 260) to ``folder``; returns it.

    Special tokens follow OPT (pad 1, eos 2); ``bos`` is prepended to every encoding, unless
    ``add_bos=False`` (as SmolLM2's tokenizer: ``""`` encodes to no token at all).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_CORPUS, trainer)
    bos_id = SPECIAL_TOKENS.index(bos)
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = Path(folder)
    fast.save_pretrained(folder)
    return folder


#: T5's special tokens and their ids: <pad>=0, </s>=1, <unk>=2
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def save_tiny_t5_tokenizer(folder: str | Path, vocab_size: int = 120) -> Path:
    """Write a T5 tokenizer (transformers' ``T5Tokenizer``, no extra ids) over a Unigram vocabulary of
    at most ``vocab_size`` pieces from a tiny corpus; returns the folder. Like FlanT5's, it appends
    ``</s>`` to every encoding and pads on the right; ``len(tokenizer)`` is its real size.

    The vocabulary is built, not trained (the ``tokenizers`` Unigram trainer is not deterministic
    across runs): the special tokens, then every corpus word as ``"▁word"`` (log-prob -2), then
    ``"▁"`` and every character (-6), so known words stay one piece and anything else spells out."""
    from transformers import T5Tokenizer

    words = sorted({word for line in TINY_CORPUS for word in line.split()})
    chars = sorted({char for line in TINY_CORPUS for char in line if not char.isspace()})
    vocab = [(token, 0.0) for token in T5_SPECIAL_TOKENS]
    vocab += [("\u2581" + word, -2.0) for word in words]
    vocab += [("\u2581", -6.0)] + [(char, -6.0) for char in chars if ("\u2581" + char, -2.0) not in vocab]
    folder = Path(folder)
    T5Tokenizer(vocab=vocab[:vocab_size], extra_ids=0).save_pretrained(folder)
    return folder


#: the tiny BLIP-2 around the text model of ``save_hf_blip2_folder``: EVA ViT at 32 px (16 patches
#: of 8 px, width 48), a 2-layer Q-Former of width 32 and 6 query tokens
TINY_IMAGE_SIZE = 32
TINY_NUM_QUERY_TOKENS = 6
TINY_VISION_CONFIG = dict(
    image_size=TINY_IMAGE_SIZE, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=80, layer_norm_eps=1e-6, qkv_bias=True, initializer_range=0.02,
)
TINY_QFORMER_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, cross_attention_frequency=1,
    encoder_hidden_size=48, vocab_size=99, max_position_embeddings=64, initializer_range=0.02,
)


def tiny_blip2_config(
    text_config: Mapping[str, Any], *, qformer_config: Mapping[str, Any] | None = None, **fields: Any
) -> Any:
    """A transformers ``Blip2Config``: the tiny vision tower and Q-Former above around ``text_config``.

    Args:
        text_config: transformers config fields of the language model, with its ``model_type``.
        qformer_config: Q-Former fields instead of ``TINY_QFORMER_CONFIG`` (e.g. a BERT vocabulary
            and ``use_qformer_text_input`` for ``Blip2ForImageTextRetrieval``).
        fields: further ``Blip2Config`` fields (``image_token_index``, ``image_text_hidden_size``).
    """
    from transformers import Blip2Config

    text_config = dict(text_config)
    if "model_type" not in text_config:
        raise ValueError("text_config needs its model_type (e.g. 'opt', 'llama', 'qwen2')")
    return Blip2Config(
        vision_config=TINY_VISION_CONFIG,
        qformer_config=dict(qformer_config if qformer_config is not None else TINY_QFORMER_CONFIG),
        text_config=text_config,
        num_query_tokens=TINY_NUM_QUERY_TOKENS,
        initializer_range=0.02,
        **fields,
    )


def save_hf_blip2_folder(
    folder: str | Path,
    text_config: Mapping[str, Any],
    *,
    image_token_index: int | None = None,
    seed: int = 0,
) -> Any:
    """Write a random ``Blip2ForConditionalGeneration`` with the given text model; returns it (eval).

    Args:
        folder: where ``save_pretrained`` writes ``config.json`` and ``model.safetensors``.
        text_config: transformers config fields of the language model, with its ``model_type``
            (``{"model_type": "qwen2", "vocab_size": 120, "hidden_size": 32, ...}``).
        image_token_index: the ``<image>`` placeholder id of HF-style prompts; default: the last
            id of the text vocabulary.
        seed: ``torch.manual_seed`` before the weights are drawn.
    """
    import torch
    from transformers import Blip2ForConditionalGeneration

    config = tiny_blip2_config(text_config)
    config.image_token_index = (
        image_token_index if image_token_index is not None else int(text_config["vocab_size"]) - 1
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    return model


def save_hf_instructblip_folder(
    folder: str | Path,
    text_config: Mapping[str, Any],
    *,
    qformer_vocab_size: int,
    image_token_index: int | None = None,
    seed: int = 0,
) -> Any:
    """Write a random ``InstructBlipForConditionalGeneration`` (the tiny vision tower and Q-Former of
    ``tiny_blip2_config``) with the given text model; returns it (eval).

    Args:
        folder: where ``save_pretrained`` writes ``config.json`` and ``model.safetensors``.
        text_config: transformers config fields of the language model, with its ``model_type``.
        qformer_vocab_size: the Q-Former's word embeddings: at least the size of the BERT tokenizer
            that will read the instructions.
        image_token_index: the ``<image>`` placeholder id (default: the last id of the text vocabulary).
        seed: ``torch.manual_seed`` before the weights are drawn. The query tokens, which
            transformers starts at 0, are drawn from N(0, 0.02) as BLIP-2's training does.
    """
    import torch
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    text_config = dict(text_config)
    if "model_type" not in text_config:
        raise ValueError("text_config needs its model_type (e.g. 'llama', 't5')")
    config = InstructBlipConfig(
        vision_config=TINY_VISION_CONFIG,
        qformer_config={**TINY_QFORMER_CONFIG, "vocab_size": qformer_vocab_size},
        text_config=text_config,
        num_query_tokens=TINY_NUM_QUERY_TOKENS,
        initializer_range=0.02,
        image_token_index=image_token_index if image_token_index is not None else int(text_config["vocab_size"]) - 1,
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    return model


def check_vision_encoder(encoder: Any, *, batch_size: int = 2, seed: int = 0) -> Any:
    """Assert that ``encoder`` keeps the ``VisionEncoder`` contract; returns its tokens [B, N, C].

    It must be an ``nn.Module`` with an int ``width`` (C) and a ``PreprocessConfig`` as
    ``preprocess_config``, and turn random pixel values [B, 3, S, S] (S: the config's
    ``image_size``) into a floating-point tensor [B, N, C] with N >= 1.

    Raises:
        AssertionError: the first broken rule, in words.
    """
    import torch
    from torch import nn

    from blip2core.preprocess_config import PreprocessConfig

    name = type(encoder).__name__
    assert isinstance(encoder, nn.Module), f"{name} is not a torch.nn.Module"
    width = getattr(encoder, "width", None)
    assert isinstance(width, int) and width > 0, f"{name}.width must be a positive int, got {width!r}"
    config = getattr(encoder, "preprocess_config", None)
    assert isinstance(config, PreprocessConfig), (
        f"{name}.preprocess_config must be a blip2core.PreprocessConfig, got {type(config).__name__}"
    )
    size = config.image_size
    pixels = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        tokens = encoder(pixels)
    assert isinstance(tokens, torch.Tensor), f"{name}.forward must return a tensor, got {type(tokens).__name__}"
    assert tokens.dim() == 3 and tokens.shape[0] == batch_size and tokens.shape[1] >= 1 and tokens.shape[2] == width, (
        f"{name}.forward: expected tokens [{batch_size}, N, {width}], got {list(tokens.shape)}"
    )
    assert tokens.is_floating_point(), f"{name}.forward returned {tokens.dtype} tokens"
    return tokens
