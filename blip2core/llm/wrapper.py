"""``TransformersLanguageModel``: any transformers causal LM behind the ``LanguageModel`` protocol
(``TransformersModel``: what it shares with the encoder-decoder wrapper of ``blip2core.llm.seq2seq``).

Shapes: B = batch, T = sequence length, D = input-embedding width, V = vocabulary size.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from blip2core.checkpoints.copying import write_tensors
from blip2core.checkpoints.deferred import tied_names
from blip2core.errors import CheckpointError
from blip2core.llm import kv_cache
from blip2core.llm.foreign import map_foreign_keys
from blip2core.llm.loss import causal_lm_loss, positions_from_mask
from blip2core.protocols import LanguageModelOutput


class TransformersModel(nn.Module):
    """What every transformers-backed language model shares: the model, its tokenizer, the
    ``GenerationDefaults``, its input embedding and the loading of foreign checkpoints.
    ``TransformersLanguageModel`` (decoder-only) and ``TransformersSeq2SeqLanguageModel``
    (encoder-decoder, ``blip2core.llm.seq2seq``) add ``forward`` and ``generate``.

    Attributes:
        model: the transformers model (its state-dict names appear under ``model.``).
        tokenizer: its Hugging Face tokenizer (``padding_side`` set as asked), or None when the
            component was built from a bare config without a tokenizer source.
        hidden_size: D, the width of the input embeddings (OPT with ``word_embed_proj_dim`` !=
            ``hidden_size``: ``word_embed_proj_dim``).
        vocab_size: V, the number of logits.
        stop_token_ids: tokens after which callers usually stop generating, beyond EOS (OPT in
            BLIP-2 captioning: the id of ``"\\n"``). Not applied by ``generate`` itself: pass
            ``eos_token_id=[*llm.stop_token_ids, eos]`` to use them.
        weights_loaded: True when pretrained weights were loaded (not a random-init config).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        *,
        stop_token_ids: Iterable[int] = (),
        weights_loaded: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size: int = model.get_input_embeddings().embedding_dim
        self.vocab_size: int = model.get_output_embeddings().weight.shape[0]
        self.stop_token_ids: tuple[int, ...] = tuple(stop_token_ids)
        self.weights_loaded = weights_loaded
        self.train(model.training)  # a frozen LLM arrives in eval mode: keep it so

    @property
    def config(self) -> Any:
        """The transformers config of the wrapped model."""
        return self.model.config

    # -- GenerationDefaults ---------------------------------------------------------------
    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The model's end-of-sequence ids: its generation config's, else its config's (maybe none)."""
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(self.model.config, "eos_token_id", None)
        return (eos,) if isinstance(eos, int) else tuple(eos or ())

    @property
    def pad_token_id(self) -> int | None:
        """The pad id of the model's generation config, or None (callers fall back to the tokenizer's)."""
        return getattr(getattr(self.model, "generation_config", None), "pad_token_id", None)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] long -> embeddings [B, T, D] (the model's own input embedding)."""
        embedding = self.model.get_input_embeddings()
        return embedding(input_ids.to(embedding.weight.device))

    def _with_pad_token(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``generate`` kwargs given the tokenizer's pad id when neither they nor the model name one."""
        if kwargs.get("pad_token_id") is None and self.model.generation_config.pad_token_id is None:
            pad = getattr(self.tokenizer, "pad_token_id", None)
            if pad is not None:
                kwargs["pad_token_id"] = pad
        return kwargs

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str
    ) -> tuple[list[str], list[str]]:
        """Copy in the language-model weights of a Hugging Face (``hf``) or LAVIS (``lavis``) BLIP-2
        state dict (full key names: ``language_model.*`` / top-level ``lm_head.*``, or
        ``opt_model.*`` / ``llm_model.*`` / ``t5_model.*``; see ``blip2core.llm.foreign``).

        Returns (missing keys in this module's names, e.g. ``model.lm_head.weight``; source keys
        that fit nothing). A tied output embedding counts as loaded with the input embedding.
        A model built with its parameters on ``meta`` (``blip2core.checkpoints.deferred``) takes
        the checkpoint's tensors themselves, ties kept (``write_tensors``).
        """
        own = self.model.state_dict()
        mapping, unexpected = map_foreign_keys(state_dict.keys(), layout, own.keys())
        if self._untie_output_embedding(state_dict, mapping, own):
            own = self.model.state_dict()
        for source, target in mapping.items():
            tensor, param = state_dict[source], own[target]
            if tuple(tensor.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{source}: shape {tuple(tensor.shape)} does not fit the language model's "
                    f"{target} {tuple(param.shape)}; is the component's config the checkpoint's?"
                )
        write_tensors(own, {target: state_dict[source] for source, target in mapping.items()}, self.model)
        own = self.model.state_dict()  # assigned tensors replaced the meta ones
        targets = set(mapping.values())
        loaded = {_identity(own[t]) for t in targets}
        missing = [f"model.{k}" for k, v in own.items() if k not in targets and _identity(v) not in loaded]
        return missing, unexpected

    def _untie_output_embedding(
        self, state_dict: Mapping[str, torch.Tensor], mapping: Mapping[str, str], own: Mapping[str, torch.Tensor]
    ) -> bool:
        """Give the output embedding its own weight when it is tied to the input embedding here but the
        checkpoint holds two different tensors for them (FlanT5: transformers 5 builds every T5 tied
        and unties it on loading such a checkpoint, as done here). Returns whether it untied."""
        output = self.model.get_output_embeddings()
        if output is None or not _same_tensor(output.weight, self.model.get_input_embeddings().weight):
            return False
        names = set(tied_names(self.model).get(id(output.weight), ()))  # meta tensors have no address to compare
        tied = _identity(output.weight)
        sources = {
            target: source
            for source, target in mapping.items()
            if target in names or (not output.weight.is_meta and _identity(own[target]) == tied)
        }
        name = next((f"{n}.weight" for n, m in self.model.named_modules() if m is output), None)
        if name not in sources or len(sources) < 2:
            return False
        head = state_dict[sources[name]]
        if all(torch.equal(state_dict[s], head) for t, s in sources.items() if t != name):
            return False
        output.weight = nn.Parameter(output.weight.detach().clone(), requires_grad=output.weight.requires_grad)
        self.model.config.tie_word_embeddings = False
        return True


class TransformersLanguageModel(TransformersModel):
    """A frozen transformers ``*ForCausalLM`` fed with input embeddings (attributes: ``TransformersModel``).

    Besides ``LanguageModel`` it implements ``GenerationDefaults`` (``stop_token_ids``,
    ``eos_token_ids``, ``pad_token_id``), ``SupportsPrefixCache``, ``LoadsOwnWeights`` and
    ``LoadsForeignCheckpoints`` (``blip2core.protocols``).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        *,
        stop_token_ids: Iterable[int] = (),
        weights_loaded: bool = False,
    ) -> None:
        super().__init__(model, tokenizer, stop_token_ids=stop_token_ids, weights_loaded=weights_loaded)
        parameters = inspect.signature(model.forward).parameters
        self._takes_position_ids = "position_ids" in parameters
        self._takes_logits_to_keep = "logits_to_keep" in parameters

    # -- SupportsPrefixCache --------------------------------------------------------------
    def build_prefix_cache(self, prefix_embeds: torch.Tensor) -> Any:
        """prefix_embeds [1, P, D] -> the transformers key/value cache over the P positions."""
        return kv_cache.prefix_cache(self.model, prefix_embeds)

    def prefix_cache_kwargs(self, cache: Any, rows: int) -> dict[str, Any]:
        """``generate`` keyword arguments continuing from a private copy of ``cache`` repeated for ``rows`` rows."""
        return {kv_cache.cache_argument(self.model): kv_cache.expanded_copy(cache, rows)}

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> LanguageModelOutput:
        """inputs_embeds [B, T, D], attention_mask [B, T] (1 = attend), labels [B, T] (-100 = ignore).

        Returns logits [B, T, V] and, with labels, the mean next-token loss (labels shifted by
        one inside). Position ids count only attended tokens, so padding anywhere (left, or
        between an image prefix and text) leaves the real tokens' logits unchanged.
        ``logits_to_keep`` > 0: logits of the last K positions only, [B, K, V] (training saves the
        vocabulary projection of every other position); not combinable with labels.
        """
        extra: dict[str, Any] = {}
        if logits_to_keep:
            if labels is not None:
                raise ValueError("logits_to_keep and labels cannot be combined: the loss needs every position")
            if self._takes_logits_to_keep:
                extra["logits_to_keep"] = logits_to_keep
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device, torch.long)
            if self._takes_position_ids:
                extra["position_ids"] = positions_from_mask(attention_mask)
        output = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **extra)
        logits = output.logits
        if logits_to_keep and logits.shape[1] > logits_to_keep:
            logits = logits[:, -logits_to_keep:, :]
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return LanguageModelOutput(logits=logits, loss=loss)

    @torch.no_grad()
    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Continue from a prefix of embeddings [B, T, D] (mask [B, T], left padding expected).

        kwargs are transformers generation options (``max_new_tokens``, ``num_beams``,
        ``do_sample``, ``eos_token_id``, ...). Returns only the new token ids
        [B * num_return_sequences, L] long, padded with ``pad_token_id`` after a sequence ends.
        """
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        attention_mask = attention_mask.to(inputs_embeds.device, torch.long)
        kwargs = self._with_pad_token(kwargs)
        output = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        return getattr(output, "sequences", output)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same parameter, or (off ``meta``) views of the same memory."""
    return a is b or (not a.is_meta and not b.is_meta and _identity(a) == _identity(b))


def _identity(tensor: torch.Tensor) -> tuple:
    """Same memory, same view: tied parameters share this."""
    return (tensor.data_ptr(), tuple(tensor.shape), tensor.stride())
