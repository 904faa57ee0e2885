"""``blip2core.torchrun``: torchrun's environment and process group, read and joined in one place
(the inference CLI and, through the SDK, the training runner)."""

from __future__ import annotations

import pytest

from blip2core.torchrun import TorchrunEnv, join_process_group, local_device, process_group, torchrun_env


@pytest.fixture
def alone(monkeypatch):
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)


def test_one_process_is_rank_0_of_1_and_joins_nothing(alone):
    assert torchrun_env() == TorchrunEnv(0, 1, 0) and not torchrun_env().enabled
    assert join_process_group("cpu") is False
    with process_group() as (rank, world):
        assert (rank, world) == (0, 1)
    assert local_device("cuda") == "cuda" and local_device(None) is None


def test_torchrun_variables_are_read(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == TorchrunEnv(3, 4, 1) and torchrun_env().enabled
    assert local_device("cuda") == "cuda:1" and local_device("cuda:0") == "cuda:0" and local_device("cpu") == "cpu"


def test_a_world_without_ranks_names_the_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 but RANK is not set: start the processes with torchrun"):
        torchrun_env()
