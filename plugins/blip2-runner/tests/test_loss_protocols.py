"""The Q-Former losses need the bridge's text side (``blip2core.TextBridge``): a pipeline whose
bridge lacks it gets one error naming the loss and the protocol, and the LM loss still trains it."""

from __future__ import annotations

import pytest
import torch

from blip2core import MissingProtocolError, load_pipeline
from blip2_runner.config import DatasetConfig
from blip2_runner.data import load_dataset
from blip2_runner.losses import ITCLoss, ITGLoss, ITMLoss, LMLoss
from blip2_runner.testing import tiny_pipeline_spec


@pytest.fixture(scope="module")
def projector_pipeline(tmp_path_factory):
    torch.manual_seed(0)
    spec = tiny_pipeline_spec(tmp_path_factory.mktemp("spec"))
    spec["bridge"] = {"name": "mlp-projector", "options": {}}
    return load_pipeline(spec)


def test_text_side_losses_name_the_missing_protocol_and_the_lm_loss_trains(projector_pipeline):
    examples = load_dataset("e", DatasetConfig(format="easy-vqa", split="test", limit=4)).examples
    pixels = projector_pipeline.preprocessor([e["image"] for e in examples], train=False)
    texts = [e["answer"] for e in examples]
    for name, loss in (("itc", ITCLoss()), ("itm", ITMLoss()), ("itg", ITGLoss())):
        batch = {"pixel_values": pixels, "text_input": texts}
        with pytest.raises(MissingProtocolError) as raised:
            loss(projector_pipeline, batch)
        message = str(raised.value)
        assert message.startswith(f"the {name} loss needs a bridge that implements blip2core.protocols.TextBridge (")
        assert "this pipeline's bridge 'mlp-projector'" in message
    batch = {"pixel_values": pixels, "prompt": ["Question: what? Answer:"] * len(texts), "target": texts}
    value = LMLoss()(projector_pipeline, batch)
    value.backward()
    assert torch.isfinite(value) and any(p.grad is not None for p in projector_pipeline.bridge.parameters())
