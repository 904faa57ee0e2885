"""Helpers for tests of language-model plugins: a tiny real tokenizer, saved like a hub one.

Tiny random models need a tokenizer whose vocabulary fits them; this trains a byte-level BPE
(GPT-2 / OPT / SmolLM2 style) on a few sentences in milliseconds, with no download.
"""

from __future__ import annotations

from pathlib import Path

TINY_CORPUS = (
    "a photo of a cat sitting on a mat",
    "the capital of france is paris",
    "question: what colour is the dog? answer: brown\n",
    "two people riding bikes down a street\n",
)

#: OPT's special-token ids: <s>=0, <pad>=1, </s>=2, <unk>=3
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def save_tiny_tokenizer(folder: str | Path, vocab_size: int = 320, *, bos: str = "</s>") -> Path:
    """Write a byte-level BPE tokenizer (``vocab_size`` >= 260) to ``folder``; returns it.

    Special tokens follow OPT (pad 1, eos 2); ``bos`` is prepended to every encoding.
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
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = Path(folder)
    fast.save_pretrained(folder)
    return folder
