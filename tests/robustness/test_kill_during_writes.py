"""SIGKILL while a file is being written: nothing half-written is ever read back, and the rerun
completes the work exactly once.

Real child processes, killed from outside at the moment their atomic writer's temporary file
(``.tmp-...``, ``blip2core.atomic``) appears: the parent polls the folder and sends SIGKILL as
soon as it sees one, so the child dies with a half-written file on disk, as on a crash or an OOM
kill. Nothing in the product waits for the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import tiny_models as T
from blip2core import load_pipeline
from blip2core.atomic import is_leftover
from blip2core.cli.main import main
from blip2core.inference.feature_store import read_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMEOUT_S = 240
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("BLIP2_DEBUG", None)


def kill_when_written(command: list[str], watch: Path, wanted, *, after: int = 0) -> tuple[int, list[str]]:
    """Start ``command``; SIGKILL it the moment the ``after``+1-th new name for which
    ``wanted(name)`` holds shows up anywhere under ``watch``. Returns (exit code, names seen).
    A child that ends first fails the test (its stderr in the message)."""
    child = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while child.poll() is None and time.monotonic() < deadline:
            for root, folders, files in os.walk(watch):
                for name in folders + files:
                    if wanted(name) and name not in seen:
                        seen.append(name)
            if len(seen) > after:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = child.stderr.read()
    child.stderr.close()
    assert code == -signal.SIGKILL, f"the child was not killed mid-write (exit {code}; saw {seen}):\n{stderr[-3000:]}"
    return code, seen


def blip2_command(*args) -> list[str]:
    return [sys.executable, "-m", "blip2core.cli", *map(str, args)]


def blip2_here(capsys, *args) -> None:
    """The rerun (and the reference run): the real ``blip2`` entry point, in this process."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if is_leftover(p))


# ------------------------------------------------------------------------------- pipe.save
SAVE_LOOP = textwrap.dedent("""
    import sys
    from blip2core import load_pipeline
    pipe = load_pipeline(sys.argv[1])
    for _ in range(200):  # saves until killed
        pipe.save(sys.argv[2])
""")


@pytest.mark.parametrize("file", ["trainable.safetensors", "pipeline.yaml"])
def test_pipe_save_killed_while_writing_leaves_no_torn_file_and_a_rerun_saves_it(file, hf_opt_folder, photos,
                                                                                  tmp_path):
    out = tmp_path / "saved"
    kill_when_written([sys.executable, "-c", SAVE_LOOP, str(hf_opt_folder), str(out)], tmp_path,
                      lambda name: name.startswith(f".tmp-{file}"), after=1)  # mid-way through the 2nd save
    # what is at the final names is whole: a complete safetensors file, a complete YAML spec
    load_file(str(out / "trainable.safetensors"))
    assert yaml.safe_load((out / "pipeline.yaml").read_text())["weights"][-1] == "trainable.safetensors"
    pipe = load_pipeline(hf_opt_folder)
    pipe.save(out)  # the rerun
    assert leftovers(out) == []
    again = load_pipeline(out)
    assert again.caption(photos[:2], max_new_tokens=5) == pipe.caption(photos[:2], max_new_tokens=5)


# -------------------------------------------------------------------------- blip2 features
@pytest.mark.parametrize("moment", ["part", "merge"])
def test_features_killed_while_writing_resume_to_each_image_exactly_once(moment, hf_itm_folder, photos, tmp_path,
                                                                          capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, photo in enumerate(photos * 2):  # 8 images, 4 distinct photos
        (images / f"{i:02d}-{photo.name}").write_bytes(photo.read_bytes())
    out = tmp_path / "out" / "features.safetensors"
    out.parent.mkdir()
    arguments = ("features", images, "--out", out, "--model", hf_itm_folder, "--batch-size", 1, "--no-progress")
    command = blip2_command(*arguments)
    if moment == "part":  # the 3rd batch's part file is being written
        kill_when_written(command, out.parent, lambda name: name.startswith(".tmp-part-"), after=2)
    else:  # every part is written; the merged file is being written
        kill_when_written(command, out.parent, lambda name: name.startswith(".tmp-features"))
    assert not out.exists() or len(read_features(out)[0]) == 8  # never a torn merged file
    blip2_here(capsys, *arguments)
    names, tensors = read_features(out)
    assert sorted(names) == sorted(p.name for p in images.iterdir())  # each image once
    assert leftovers(out.parent) == [] and not out.with_name(out.name + ".parts").exists()
    reference = tmp_path / "reference.safetensors"
    blip2_here(capsys, "features", images, "--out", reference, "--model", hf_itm_folder, "--no-progress")
    ref_names, ref_tensors = read_features(reference)
    order = [names.index(n) for n in ref_names]
    for field, tensor in ref_tensors.items():
        torch.testing.assert_close(tensors[field][order], tensor, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- training checkpoints
def test_training_killed_while_checkpointing_resumes_the_exact_trajectory(tmp_path, capsys):
    from blip2_runner.checkpoint import FILES, list_checkpoints, load_checkpoint
    from blip2_runner.testing import tiny_run_config
    from blip2_runner.tracking import read_metrics

    def losses(out: Path) -> list[tuple[int, float]]:
        return sorted((r["step"], r["loss"]) for r in read_metrics(out) if r.get("kind") == "train" and "loss" in r)

    config = tiny_run_config(tmp_path, steps=5, batch_size=2, train_limit=16, checkpoint_every=1, keep_checkpoints=10)
    config["tasks"][0].pop("eval")
    runs = {}
    for name in ("killed", "reference"):
        config["output_dir"] = str(tmp_path / name)
        runs[name] = tmp_path / f"{name}.yaml"
        runs[name].write_text(yaml.safe_dump(config))
    killed = tmp_path / "killed"
    kill_when_written(blip2_command("train", runs["killed"]), killed, lambda n: n.startswith(".tmp-step-"), after=2)
    complete = list_checkpoints(killed)
    assert [p.name for p in complete] == ["step-00000001", "step-00000002"]  # the 3rd was being written
    for step in complete:
        assert all((step / name).is_file() for name in FILES)
        load_checkpoint(step)
    blip2_here(capsys, "train", runs["killed"])
    blip2_here(capsys, "train", runs["reference"])
    assert [p.name for p in list_checkpoints(killed)] == [f"step-{i:08d}" for i in range(1, 6)]
    assert leftovers(killed / "checkpoints") == []
    got, expected = losses(killed), losses(tmp_path / "reference")
    assert [s for s, _ in got] == [1, 2, 3, 4, 5]  # each step logged once
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], abs=1e-6)
    final = load_file(str(killed / "checkpoints/step-00000005/trainable.safetensors"))
    reference = load_file(str(tmp_path / "reference/checkpoints/step-00000005/trainable.safetensors"))
    for key, value in reference.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-6)


def test_only_leftovers_of_dead_writers_on_this_host_are_removed(tmp_path):
    """A killed writer's temporary file goes at the next write into its folder; a live writer's
    (this process, or another that is running) and another host's stay."""
    from blip2core.atomic import _host, atomic_write_text

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = _host()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        names = {
            "dead": f".tmp-a.txt-{host}.{dead.stdout.strip()}-0123abcd.txt",
            "live": f".tmp-a.txt-{host}.{sleeper.pid}-0123abcd.txt",
            "other host": f".tmp-a.txt-elsewhere.{dead.stdout.strip()}-0123abcd.txt",
            "dead folder": f".trash-b-{host}.{dead.stdout.strip()}-0123abcd",
        }
        for kind, name in names.items():
            (tmp_path / name).mkdir() if "folder" in kind else (tmp_path / name).write_text("partial")
        atomic_write_text(tmp_path / "a.txt", "whole")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.txt", names["live"], names["other host"]])
    finally:
        sleeper.kill()
        sleeper.wait()

