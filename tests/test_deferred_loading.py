"""Loading a checkpoint builds the components it covers without random initialisation and takes its
memory-mapped tensors themselves (``blip2core.checkpoints.deferred``); what it does not cover keeps
its seeded random values."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import tiny_models as T
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from blip2core import load_pipeline
from blip2core.checkpoints.deferred import meta_tensor_names, parameters_on_meta
from blip2core.loading import resolve_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANDOM_OPS = {"normal_", "uniform_", "bernoulli_", "random_", "exponential_", "log_normal_", "cauchy_", "geometric_"}


class RandomDraws(TorchDispatchMode):
    """Counts in-place random fills of tensors that have memory (not ``meta``), by op name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in RANDOM_OPS and isinstance(args[0], torch.Tensor) and not args[0].is_meta:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def opt_folder(tmp_path_factory) -> Path:
    return T.saved_once(tmp_path_factory.mktemp("hf-opt"), T.save_generation_folder)


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges where ``path`` is memory-mapped in this process (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path.resolve()):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def test_loading_an_hf_folder_draws_no_random_weights_and_maps_each_weight_once(opt_folder):
    with RandomDraws() as draws:
        pipe = load_pipeline(opt_folder)
    assert draws.counts == {}
    state = {**dict(pipe.named_parameters(remove_duplicate=False)), **dict(pipe.named_buffers())}
    assert [name for name, tensor in state.items() if tensor.device.type != "cpu"] == []
    # every parameter is the checkpoint's tensor itself: its memory lies in the file's mapping
    checkpoint = load_file(str(opt_folder / "model.safetensors"))
    ranges = mapped_ranges(opt_folder / "model.safetensors")
    assert ranges, "the checkpoint is not memory-mapped"
    copied = [name for name, p in pipe.named_parameters() if not any(a <= p.data_ptr() < b for a, b in ranges)]
    assert copied == []
    # with the checkpoint's values, tied weights still tied
    assert torch.equal(pipe.vision.cls_token, checkpoint["vision_model.embeddings.class_embedding"])
    assert torch.equal(pipe.bridge.query_tokens, checkpoint["query_tokens"])
    embed = checkpoint["language_model.model.decoder.embed_tokens.weight"]
    opt = pipe.llm.model
    assert torch.equal(opt.model.decoder.embed_tokens.weight, embed)
    assert opt.lm_head.weight is opt.model.decoder.embed_tokens.weight
    # buffers no checkpoint holds are computed at construction, as without a checkpoint
    spec = resolve_spec(opt_folder).model_dump()
    with RandomDraws() as draws:  # the counter sees random initialisation when there is some
        random_pipe = load_pipeline({**spec, "weights": []})
    assert draws.counts.get("normal_", 0) > 0
    buffers = dict(random_pipe.named_buffers())
    assert buffers.keys() == dict(pipe.named_buffers()).keys()
    assert all(torch.equal(buffer, buffers[name]) for name, buffer in pipe.named_buffers())


def test_frozen_parts_are_cast_while_they_are_assigned(opt_folder):
    pipe = load_pipeline(opt_folder, dtype="bfloat16")
    checkpoint = load_file(str(opt_folder / "model.safetensors"))
    assert {p.dtype for p in pipe.vision.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pipe.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pipe.bridge.parameters()} == {torch.float32}
    assert torch.equal(pipe.vision.cls_token, checkpoint["vision_model.embeddings.class_embedding"].bfloat16())
    assert pipe.llm.model.lm_head.weight is pipe.llm.model.get_input_embeddings().weight


def test_a_part_the_checkpoint_leaves_out_keeps_its_seeded_random_values(opt_folder, tmp_path):
    """A native checkpoint without the bridge's LLM projection: the bridge is built again the
    ordinary way, so the projection is what the seed draws without any checkpoint."""
    spec = {**resolve_spec(opt_folder).model_dump(), "seed": 3}
    random_pipe = load_pipeline({**spec, "weights": []})
    loaded = load_pipeline(opt_folder)
    partial = {f"bridge.{k}": v for k, v in loaded.bridge.state_dict().items() if not k.startswith("llm_projection.")}
    save_file(partial, str(tmp_path / "bridge.safetensors"))

    pipe = load_pipeline({**spec, "weights": [str(opt_folder), str(tmp_path / "bridge.safetensors")]})
    assert meta_tensor_names(pipe) == []
    assert torch.equal(pipe.bridge.query_tokens, loaded.bridge.query_tokens)
    for name in ("weight", "bias"):  # the HF folder holds the projection: the later file does not remove it
        assert torch.equal(getattr(pipe.bridge.llm_projection, name), getattr(loaded.bridge.llm_projection, name))

    pipe = load_pipeline({**spec, "weights": [str(tmp_path / "bridge.safetensors")]}, strict=False)
    assert meta_tensor_names(pipe) == []
    assert torch.equal(pipe.bridge.query_tokens, loaded.bridge.query_tokens)
    assert torch.equal(pipe.bridge.llm_projection.weight, random_pipe.bridge.llm_projection.weight)
    assert not torch.equal(pipe.bridge.llm_projection.weight, loaded.bridge.llm_projection.weight)
    assert pipe.load_report.missing["bridge"] == ["llm_projection.bias", "llm_projection.weight"]


def test_parameters_on_meta_affects_only_its_own_thread():
    built: dict[str, nn.Linear] = {}
    inside, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        inside.wait()
        built["other"] = nn.Linear(4, 4)
        done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with parameters_on_meta():
        inside.set()
        done.wait()
        built["here"] = nn.Linear(4, 4)
        built["buffered"] = nn.BatchNorm1d(4)
    worker.join()
    assert built["here"].weight.is_meta and built["here"].bias.is_meta
    assert not built["other"].weight.is_meta
    assert meta_tensor_names(built["buffered"]) == ["weight", "bias"]  # buffers stay real
    assert not nn.Linear(4, 4).weight.is_meta  # and nothing after the block


def test_one_source_tensor_for_two_untied_parameters_gives_each_its_own_memory():
    """BERT's FFN fills both the Q-Former's text and query FFN: writing one must not change the other."""
    from blip2core.checkpoints.copying import write_tensors

    with parameters_on_meta():
        module = nn.ModuleDict({"text": nn.Linear(3, 3), "query": nn.Linear(3, 3)})
    source = torch.arange(9.0).reshape(3, 3)
    write_tensors(module.state_dict(), {"text.weight": source, "query.weight": source}, module)
    assert meta_tensor_names(module) == ["text.bias", "query.bias"]
    with torch.no_grad():
        module["query"].weight.add_(1)
    assert torch.equal(module["text"].weight, torch.arange(9.0).reshape(3, 3))


def test_kept_checkpoint_dtypes_take_every_checkpoint_as_stored():
    """A component quantized while loading keeps each tensor's stored dtype (the quantizer casts it
    layer by layer): a first checkpoint in bf16 and a second in float32 for the same weight leave
    the float32 values, not the float32 values rounded into bf16. Unmarked parameters are cast."""
    from blip2core.checkpoints.copying import write_tensors
    from blip2core.checkpoints.deferred import keep_checkpoint_dtypes

    with parameters_on_meta():
        kept, cast = nn.Linear(3, 3), nn.Linear(3, 3)
    keep_checkpoint_dtypes(kept)
    first = torch.randn(3, 3).to(torch.bfloat16)
    second = torch.randn(3, 3) / 3  # values bf16 cannot hold
    for module in (kept, cast):
        write_tensors(module.state_dict(), {"weight": first, "bias": torch.zeros(3, dtype=torch.bfloat16)}, module)
    assert kept.weight.dtype == torch.bfloat16 and cast.weight.dtype == torch.float32
    for module in (kept, cast):
        write_tensors(module.state_dict(), {"weight": second}, module)
    assert kept.weight.dtype == torch.float32 and torch.equal(kept.weight, second)
    assert cast.weight.dtype == torch.float32 and torch.equal(cast.weight, second)
