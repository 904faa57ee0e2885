"""BLIP-2's training objectives as blip2core ``Loss`` components.

Each loss is called as ``loss(pipeline, batch)`` and returns a scalar. A *batch* is a dict:

- ``pixel_values`` [b, 3, S, S] or ``vision_tokens`` [b, N, C] (from the feature cache); pixels go
  through ``Pipeline.encode_vision`` once per batch, whichever losses read them;
- ``text_input`` list[str] (Q-Former side: ITC / ITM / ITG);
- ``prompt`` / ``target`` list[str] (LLM side: the LM loss is taken on ``target`` only); a chat
  task gives ``messages`` (one conversation per row) instead of ``prompt``: the LLM reads them as
  ``Pipeline.chat`` shows them to it (``chat_prompt``: its chat template), so training and
  inference see the same text;
- ``match_key`` list[str] (optional): examples with equal keys are positives of each other in
  ITC and never each other's ITM negatives (e.g. the image id, or the caption text);
- ``context``: :class:`BatchContext` (step, seed, where this process's rows sit in the global batch).

ITC / ITM / ITG need the bridge's text side (``blip2core.TextBridge``); a bridge without it gets
one ``MissingProtocolError`` naming the loss and the protocol.

Distributed training: every loss is written so that N processes with per-process batch b give the
same value and the same (averaged) gradient as one process with batch N*b. ITC gathers the
features of all processes *with* gradient; ITM draws its hard negatives with noise seeded by the
step (the same global draw in every process, whatever the process count); token-level losses
divide by the token count of the whole global batch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from blip2core import GenerationDefaults, TextBridge
from blip2core.plugin_api import chat_prompt, has_chat_template, is_encoder_decoder, query_text_similarity, require_protocol

from blip2_runner import distributed as dist
from blip2_runner.data import stable_hash
from blip2_runner.options import ITCOptions, ITGOptions, ITMOptions, LMOptions

IGNORE_INDEX = -100


@dataclass
class BatchContext:
    """Where a micro-batch sits: step/micro index for seeding, this process's offset in the global batch."""

    step: int = 0
    micro: int = 0
    seed: int = 0
    offset: int = 0
    global_size: int | None = None


def context(batch: Mapping[str, Any], local_size: int) -> BatchContext:
    ctx = batch.get("context")
    if ctx is None:
        ctx = BatchContext(global_size=local_size)
    if ctx.global_size is None:
        ctx = BatchContext(ctx.step, ctx.micro, ctx.seed, ctx.offset, local_size * dist.world_size())
    return ctx


# ---------------------------------------------------------------------------------------------
# shared inputs (computed once per batch, cached in it)
# ---------------------------------------------------------------------------------------------


def vision_tokens(pipeline, batch: dict[str, Any]) -> torch.Tensor:
    """The frozen encoder's tokens [b, N, C] float32 on the pipeline's device (no gradient)."""
    cached = batch.get("vision_tokens")
    if cached is not None:
        if cached.device != pipeline.device or cached.dtype != torch.float32:
            cached = cached.to(pipeline.device, torch.float32)
            batch["vision_tokens"] = cached
        return cached
    if "pixel_values" not in batch:
        raise KeyError("batch has neither 'pixel_values' nor 'vision_tokens'")
    with torch.no_grad():
        tokens = pipeline.encode_vision(batch["pixel_values"])
    batch["vision_tokens"] = tokens
    return tokens


def text_bridge(pipeline, loss: str) -> TextBridge:
    """The pipeline's bridge as a ``TextBridge`` with its text heads, or an error naming ``loss``."""
    bridge = require_protocol(pipeline.bridge, TextBridge, f"the {loss} loss", "bridge", pipeline.spec.bridge.name)
    if not bridge.has_text_heads:
        raise RuntimeError(f"the {loss} loss needs a bridge with text heads: build the qformer with with_text_heads")
    return bridge


def qformer_tokens(pipeline, batch: dict[str, Any], max_length: int, loss: str = "itc") -> tuple[torch.Tensor, torch.Tensor]:
    """``text_input`` through the bridge's tokenizer: input_ids, attention_mask [b, T] on device."""
    key = f"_qformer_tokens_{max_length}"
    if key not in batch:
        tokenizer = text_bridge(pipeline, loss).tokenizer
        if tokenizer is None:
            raise RuntimeError("the bridge has no tokenizer: ITC/ITM/ITG need a qformer with a tokenizer "
                               "(set bridge.options.tokenizer or init_from)")
        if "text_input" not in batch:
            raise KeyError("batch has no 'text_input' (the task must provide the text for the Q-Former)")
        encoded = tokenizer(list(batch["text_input"]), padding="longest", truncation=True,
                            max_length=max_length, return_tensors="pt")
        batch[key] = (encoded["input_ids"].to(pipeline.device), encoded["attention_mask"].to(pipeline.device))
    return batch[key]


def positive_mask(batch: Mapping[str, Any], size: int, device: torch.device) -> torch.Tensor:
    """[b, B] bool: local row i and global column j are a positive pair.

    ``batch["match_key"]`` holds one key per example, a string or a tuple of strings; two examples
    are positives when any of their keys agree in the same slot. Without keys, only the diagonal.
    """
    keys = batch.get("match_key")
    if keys is None:
        ctx = context(batch, size)
        ids = torch.arange(ctx.offset, ctx.offset + size, device=device, dtype=torch.long)[:, None]
    else:
        rows = [k if isinstance(k, (tuple, list)) else (k,) for k in keys]
        ids = torch.tensor([[stable_hash("match", slot, part) for slot, part in enumerate(r)] for r in rows],
                           dtype=torch.long, device=device)
    ids_all = dist.all_gather_no_grad(ids)
    return (ids[:, None, :] == ids_all[None, :, :]).any(dim=-1)


def global_token_mean(token_losses_sum: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
    """A sum of per-token losses divided so that averaging over processes gives the mean over every
    token of the global batch."""
    total = dist.all_reduce(local_count.detach().clone().float(), "sum")
    return token_losses_sum * dist.world_size() / total.clamp(min=1.0)


def _itc_similarities(pipeline, batch: dict[str, Any], max_length: int, with_grad: bool):
    """Local-vs-global similarity logits (already divided by the temperature).

    Returns sim_i2t [b, B] (local images vs all texts), sim_t2i [b, B] (local texts vs all images).
    """
    bridge = text_bridge(pipeline, "itc")
    tokens = vision_tokens(pipeline, batch)
    ids, mask = qformer_tokens(pipeline, batch, max_length)
    with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
        image_embeds = bridge.image_embeds_proj(bridge.encode_queries(tokens))  # [b, Q, E]
        text_embeds = bridge.text_embeds_proj(bridge.text_features(ids, mask))  # [b, E]
        gather = dist.all_gather_with_grad if with_grad else dist.all_gather_no_grad
        image_all = gather(image_embeds)  # [B, Q, E]
        text_all = gather(text_embeds)  # [B, E]
        sim_i2t = query_text_similarity(image_embeds, text_all, bridge.temp)  # [b, B]
        sim_t2i = query_text_similarity(image_all, text_embeds, bridge.temp).t()  # [b, B]
    return sim_i2t, sim_t2i


# ---------------------------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------------------------


class ITCLoss:
    """Similarity of an image and a text = max over the queries of the cosine of the projected
    query and the projected [CLS]; divided by the learned temperature; cross-entropy in both
    directions against every text / image of the *global* batch (gathered with gradient)."""

    def __init__(self, options: ITCOptions | None = None) -> None:
        self.options = options or ITCOptions()

    def __call__(self, pipeline, batch: dict[str, Any]) -> torch.Tensor:
        bridge = text_bridge(pipeline, "itc")
        with torch.no_grad():
            bridge.temp.clamp_(self.options.min_temperature, self.options.max_temperature)
        sim_i2t, sim_t2i = _itc_similarities(pipeline, batch, self.options.max_text_length, with_grad=True)
        size = sim_i2t.shape[0]
        positives = positive_mask(batch, size, sim_i2t.device).float()  # [b, B]
        targets = positives / positives.sum(dim=1, keepdim=True)
        smoothing = self.options.label_smoothing
        loss_i2t = F.cross_entropy(sim_i2t.float(), targets, label_smoothing=smoothing)
        loss_t2i = F.cross_entropy(sim_t2i.float(), targets, label_smoothing=smoothing)
        batch["_itc_sims"] = (sim_i2t.detach(), sim_t2i.detach())
        return (loss_i2t + loss_t2i) / 2


def _sample_negatives(sim: torch.Tensor, positives: torch.Tensor, ctx: BatchContext, tag: str) -> torch.Tensor:
    """For each row, an index drawn with probability softmax(sim) over the non-positive columns.

    Gumbel-max with noise for the whole global [B, B] matrix seeded by (seed, step, micro, tag),
    sliced to this process's rows, so the draw does not depend on the number of processes.
    """
    rows, columns = sim.shape
    generator = torch.Generator().manual_seed(stable_hash("itm", tag, ctx.seed, ctx.step, ctx.micro))
    global_rows = ctx.global_size if ctx.global_size is not None else rows
    uniform = torch.rand(global_rows, columns, generator=generator, dtype=torch.float64)
    uniform = uniform[ctx.offset : ctx.offset + rows].to(sim.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-12)))
    logits = torch.log_softmax(sim.double(), dim=1).masked_fill(positives, float("-inf"))
    choice = (logits + gumbel).argmax(dim=1)
    no_candidate = torch.isinf(logits).all(dim=1)
    if bool(no_candidate.any()):  # every column is a positive of this row: fall back to any other column
        fallback = gumbel.clone()
        own = (torch.arange(rows, device=sim.device) + ctx.offset).clamp(max=columns - 1)
        fallback[torch.arange(rows, device=sim.device), own] = float("-inf")
        choice = torch.where(no_candidate, fallback.argmax(dim=1), choice)
    return choice


class ITMLoss:
    """Binary matching on (image, text) pairs: every positive pair, plus for each image a hard
    negative text and for each text a hard negative image, sampled in proportion to the softmaxed
    ITC similarity over the global batch (positives excluded). Logits are ``itm_head`` averaged
    over the queries of a bi-directional joint pass."""

    def __init__(self, options: ITMOptions | None = None) -> None:
        self.options = options or ITMOptions()

    def __call__(self, pipeline, batch: dict[str, Any]) -> torch.Tensor:
        bridge = text_bridge(pipeline, "itm")
        tokens = vision_tokens(pipeline, batch)
        ids, mask = qformer_tokens(pipeline, batch, self.options.max_text_length, "itm")
        size = tokens.shape[0]
        ctx = context(batch, size)
        sims = batch.get("_itc_sims")
        if sims is None:
            with torch.no_grad():
                sims = _itc_similarities(pipeline, batch, self.options.max_text_length, with_grad=False)
        sim_i2t, sim_t2i = (s.detach() for s in sims)
        positives = positive_mask(batch, size, tokens.device)
        neg_text = _sample_negatives(sim_i2t, positives, ctx, "i2t")  # global text index per local image
        neg_image = _sample_negatives(sim_t2i, positives, ctx, "t2i")  # global image index per local text
        pad_id = getattr(bridge.tokenizer, "pad_token_id", 0) or 0
        ids_all = dist.all_gather_no_grad(ids, pad_dim=1, pad_value=pad_id)
        mask_all = dist.all_gather_no_grad(mask, pad_dim=1, pad_value=0)
        tokens_all = dist.all_gather_no_grad(tokens)
        length = ids_all.shape[1]
        if ids.shape[1] < length:  # pad the local texts to the gathered length
            ids = F.pad(ids, (0, length - ids.shape[1]), value=pad_id)
            mask = F.pad(mask, (0, length - mask.shape[1]), value=0)
        all_tokens = torch.cat([tokens, tokens, tokens_all[neg_image]], dim=0)
        all_ids = torch.cat([ids, ids_all[neg_text], ids], dim=0)
        all_mask = torch.cat([mask, mask_all[neg_text], mask], dim=0)
        logits = bridge.itm_logits(all_tokens, all_ids, all_mask)
        labels = torch.cat([torch.ones(size, dtype=torch.long), torch.zeros(2 * size, dtype=torch.long)]).to(logits.device)
        return F.cross_entropy(logits.float(), labels)


class ITGLoss:
    """Next-token cross-entropy of the caption given the queries. The first token ([CLS]) is
    replaced by the tokenizer's BOS ("[DEC]" with ``decoder_bos_token``) when it has one."""

    def __init__(self, options: ITGOptions | None = None) -> None:
        self.options = options or ITGOptions()

    def __call__(self, pipeline, batch: dict[str, Any]) -> torch.Tensor:
        bridge = text_bridge(pipeline, "itg")
        tokens = vision_tokens(pipeline, batch)
        ids, mask = qformer_tokens(pipeline, batch, self.options.max_text_length, "itg")
        bos = getattr(bridge.tokenizer, "bos_token_id", None)
        if bos is not None:
            ids = ids.clone()
            ids[:, 0] = bos
        logits = bridge.itg_logits(tokens, ids, mask)  # [b, T, V]
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)[:, 1:]
        shifted = logits[:, :-1, :].float()
        per_token_sum = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels.reshape(-1),
                                        ignore_index=IGNORE_INDEX, label_smoothing=self.options.label_smoothing,
                                        reduction="sum")
        return global_token_mean(per_token_sum, (labels != IGNORE_INDEX).sum())


def llm_end_token(llm) -> int | None:
    """The token that ends a target: the LLM's first stop token (OPT: "\\n"; ``GenerationDefaults``),
    else its tokenizer's EOS."""
    stops = tuple(llm.stop_token_ids) if isinstance(llm, GenerationDefaults) else ()
    if stops:
        return int(stops[0])
    eos = getattr(llm.tokenizer, "eos_token_id", None)
    return None if eos is None else int(eos)


def build_lm_inputs(llm, prompts: list[str], targets: list[str], max_prompt: int, max_target: int,
                    chat_prompts: bool = False):
    """Left-padded [prompt ; target ; end] ids, attention mask and labels (targets only), and K,
    the most label tokens of any row: every label sits in the last K positions. Chat prompts
    (``chat_prompts``) are tokenised as ``Pipeline.chat`` does (a chat template writes its own
    special tokens) and lose their *first* tokens when too long: the end holds the question and
    the assistant's header."""
    tokenizer = llm.tokenizer
    if tokenizer is None:
        raise RuntimeError("the language model has no tokenizer: the LM loss needs one")
    end = llm_end_token(llm)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (end or 0)
    rows, label_rows = [], []
    for prompt, target in zip(prompts, targets):
        prompt_ids = tokenizer(prompt, add_special_tokens=not (chat_prompts and has_chat_template(tokenizer)))["input_ids"]
        prompt_ids = prompt_ids[-max_prompt:] if chat_prompts else prompt_ids[:max_prompt]
        target_text = target if (not prompt or not target or target[0].isspace() or prompt[-1].isspace()) else " " + target
        target_ids = tokenizer(target_text, add_special_tokens=False)["input_ids"][:max_target]
        if end is not None:
            target_ids = target_ids + [end]
        rows.append(prompt_ids + target_ids)
        label_rows.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for i, (row, label_row) in enumerate(zip(rows, label_rows)):
        ids[i, length - len(row):] = torch.tensor(row)
        mask[i, length - len(row):] = 1
        labels[i, length - len(row):] = torch.tensor(label_row)
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    keep = length - int(labelled.min()) if len(labelled) else 0
    return ids, mask, labels, keep


def build_encoder_decoder_lm_inputs(llm, prompts: list[str], targets: list[str], max_prompt: int, max_target: int):
    """For an encoder-decoder LLM (T5; LAVIS ``blip2_t5``'s layout): the encoder's prompt ids (with
    the tokenizer's special tokens, ``</s>``) and mask [b, T], padded on the right, and the
    decoder's labels [b, L]: target then end token, -100 after it."""
    tokenizer = llm.tokenizer
    if tokenizer is None:
        raise RuntimeError("the language model has no tokenizer: the LM loss needs one")
    end = llm_end_token(llm)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_rows = [tokenizer(prompt, add_special_tokens=True)["input_ids"][:max_prompt] for prompt in prompts]
    target_rows = [tokenizer(target, add_special_tokens=False)["input_ids"][:max_target] + ([] if end is None else [end])
                   for target in targets]
    ids, mask = _right_padded(prompt_rows, pad)
    labels, _ = _right_padded(target_rows, IGNORE_INDEX)
    return ids, mask, labels


def _right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> ids [b, longest] padded with ``pad`` on the right, and the mask of real ids."""
    length = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@functools.cache
def takes_logits_to_keep(llm_class: type) -> bool:
    """Whether a LanguageModel class's ``forward`` accepts ``logits_to_keep`` (looked up once per class)."""
    return "logits_to_keep" in inspect.signature(llm_class.forward).parameters


def soft_prompted(pipeline, llm, tokens: torch.Tensor, batch: dict[str, Any], ids: torch.Tensor, mask: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[soft prompt ; text] for the LLM: vision tokens [B, N, C] through the bridge (with the batch's
    instructions), text ids / mask [B, T] -> (inputs_embeds [B, Q+T, D], attention_mask [B, Q+T],
    labels on the soft prompt's device)."""
    encoding = pipeline.bridge_tokens(tokens, batch.get("instruction"))
    prefix = encoding.llm_inputs
    ids, mask, labels = ids.to(prefix.device), mask.to(prefix.device), labels.to(prefix.device)
    embeds = torch.cat([prefix, llm.embed_tokens(ids).to(prefix.dtype)], dim=1)
    full_mask = torch.cat([encoding.llm_attention_mask.to(mask.dtype), mask], dim=1)
    return embeds, full_mask, labels


class LMLoss:
    """Cross-entropy of the LLM on the target tokens only, given [soft prompt ; text prompt].

    The rows are padded on the left (position ids skip padding), so the targets end every row and
    the LLM projects only the last positions onto its vocabulary. An instruction-aware bridge
    also reads ``batch["instruction"]`` (the question / prompt).

    An encoder-decoder LLM (``blip2core.EncoderDecoderLanguageModel``, T5) reads [soft prompt ;
    text prompt] in its encoder and the target goes to its decoder as labels (LAVIS ``blip2_t5``)."""

    def __init__(self, options: LMOptions | None = None) -> None:
        self.options = options or LMOptions()

    def __call__(self, pipeline, batch: dict[str, Any]) -> torch.Tensor:
        tokens = vision_tokens(pipeline, batch)
        if "target" not in batch:
            raise KeyError("batch has no 'target' (the task must provide the text the LLM should produce)")
        llm = pipeline.require_llm()
        chat = batch.get("messages") is not None
        if chat:
            prompts = [chat_prompt(llm.tokenizer, messages) for messages in batch["messages"]]
        else:
            prompts = list(batch.get("prompt") or [""] * len(batch["target"]))
        if is_encoder_decoder(llm):
            return self._encoder_decoder_loss(pipeline, llm, tokens, batch, prompts)
        ids, mask, labels, keep = build_lm_inputs(llm, prompts, list(batch["target"]),
                                                  self.options.max_prompt_length, self.options.max_target_length,
                                                  chat_prompts=chat)
        embeds, full_mask, labels = soft_prompted(pipeline, llm, tokens, batch, ids, mask, labels)
        # position t of the text predicts text token t: the last keep + 1 positions cover every label
        if takes_logits_to_keep(type(llm)):
            logits = llm(inputs_embeds=embeds, attention_mask=full_mask, logits_to_keep=keep + 1).logits
        else:  # a LanguageModel without the option: every position's logits
            logits = llm(inputs_embeds=embeds, attention_mask=full_mask).logits
        text_logits = logits[:, -(keep + 1) : -1, :].float()
        kept_labels = labels[:, labels.shape[1] - keep :]
        per_token_sum = F.cross_entropy(text_logits.reshape(-1, text_logits.shape[-1]), kept_labels.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction="sum")
        return global_token_mean(per_token_sum, (labels != IGNORE_INDEX).sum())

    def _encoder_decoder_loss(self, pipeline, llm, tokens: torch.Tensor, batch: dict[str, Any], prompts: list[str]):
        ids, mask, labels = build_encoder_decoder_lm_inputs(llm, prompts, list(batch["target"]),
                                                            self.options.max_prompt_length, self.options.max_target_length)
        embeds, full_mask, labels = soft_prompted(pipeline, llm, tokens, batch, ids, mask, labels)
        logits = llm(inputs_embeds=embeds, attention_mask=full_mask, labels=labels).logits.float()  # [b, L, V]
        per_token_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction="sum")
        return global_token_mean(per_token_sum, (labels != IGNORE_INDEX).sum())


LOSSES = {"itc": (ITCLoss, ITCOptions), "itm": (ITMLoss, ITMOptions), "itg": (ITGLoss, ITGOptions), "lm": (LMLoss, LMOptions)}
