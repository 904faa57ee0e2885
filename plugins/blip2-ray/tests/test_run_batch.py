"""run_batch on a local 2-CPU Ray: rows equal the serial Pipeline calls, bad images are reported,
reruns resume, another run's folder is refused; and ``blip2 ray-batch`` in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blip2_ray import ResumeRefused, read_results, run_batch
from blip2_ray.shards import list_shards

pytestmark = pytest.mark.usefixtures("ray_local")

DECODING = {"num_beams": 2, "max_new_tokens": 8}


def rows(out: Path) -> dict[str, dict]:
    return {row["name"]: row for row in read_results(out).to_pylist()}


@pytest.fixture(scope="module")
def features_out(image_folder, tmp_path_factory):
    """One features run over the 13 files: 2 workers, batches of 4 (4 shards)."""
    out = tmp_path_factory.mktemp("features")
    summary = run_batch("features", image_folder, model="mini", out=out, num_workers=2, batch_size=4)
    print(f"\nfeatures run: {summary.seconds:.1f}s, first batch after {summary.startup_seconds:.1f}s")
    return out, summary


def test_features_equal_serial_and_the_broken_file_is_reported(features_out, image_folder, pipe):
    out, summary = features_out
    assert (summary.total, summary.done, summary.skipped, summary.shards) == (13, 13, 0, 4)
    assert [name for name, _ in summary.failed] == ["broken.png"]
    stored = rows(out)
    assert stored["broken.png"]["error"] and stored["broken.png"]["image_embeds"] is None
    good = sorted(name for name in stored if name != "broken.png")
    assert len(good) == 12 and all(stored[name]["error"] is None for name in good)
    serial = pipe.extract_features([str(image_folder / name) for name in good])
    for field in ("image_embeds", "image_embeds_proj"):
        got = torch.tensor([stored[name][field] for name in good]).view_as(serial[field])
        torch.testing.assert_close(got, serial[field].float(), atol=1e-5, rtol=0)


def test_a_rerun_does_no_work_and_a_deleted_shard_is_redone(features_out, image_folder):
    out, _ = features_out
    before = {p.name: p.stat().st_mtime_ns for p in list_shards(out)}
    again = run_batch("features", str(image_folder) + "/", model="mini", out=out, num_workers=2, batch_size=4)
    assert (again.done, again.skipped, again.shards) == (0, 13, 0)
    assert {p.name: p.stat().st_mtime_ns for p in list_shards(out)} == before

    old = rows(out)
    victim = list_shards(out)[0]
    lost = set(read_results_of(victim))
    victim.unlink()
    redo = run_batch("features", image_folder, model="mini", out=out, num_workers=1, batch_size=4)  # one batch
    assert (redo.done, redo.skipped) == (len(lost), 13 - len(lost))
    assert {p.name for p in list_shards(out)} == set(before)  # the same batch: the same shard name
    new = rows(out)
    for name in lost:
        if new[name]["error"] is None:
            assert new[name]["image_embeds"] == pytest.approx(old[name]["image_embeds"], abs=1e-5)


def read_results_of(shard: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(shard, columns=["name"]).column("name").to_pylist()


def test_resuming_with_another_task_or_model_is_refused(features_out, image_folder, tmp_path):
    out, _ = features_out
    with pytest.raises(ResumeRefused, match=r"written by another run \(job: stored .*\"task\": \"features\"") as caught:
        run_batch("caption", image_folder, model="mini", out=out)
    assert "\n" not in str(caught.value)
    spec = tmp_path / "other.yaml"
    spec.write_text("vision: {name: timm, options: {model_name: vit_tiny_patch16_224, image_size: 32}}\n"
                    "bridge: {name: qformer, options: {num_query_tokens: 4, hidden_size: 64, num_hidden_layers: 1,"
                    " num_attention_heads: 4, intermediate_size: 128}}\n")
    with pytest.raises(ResumeRefused, match=r"written by another run \(model: stored") as caught:
        run_batch("features", image_folder, model=str(spec), out=out)
    assert "\n" not in str(caught.value)


def test_captions_from_a_manifest_equal_serial(image_folder, pipe, tmp_path):
    names = ["red-circle.png", "blue-square.png", "green-triangle.png", "yellow-circle.png"]
    manifest = tmp_path / "images.txt"
    manifest.write_text("# four shapes\n" + "".join(f"{image_folder / n}\n" for n in names))
    summary = run_batch("caption", manifest, model="mini", out=tmp_path / "out", num_workers=1, batch_size=2,
                        **DECODING)  # one worker (a model load less); two workers: the features run
    assert (summary.done, summary.failed, summary.shards) == (4, [], 2)
    stored = {Path(name).name: row["caption"] for name, row in rows(tmp_path / "out").items()}
    serial = pipe.caption([str(image_folder / n) for n in names], **DECODING)
    assert [stored[n] for n in names] == serial
    assert all(serial)


def test_cli_answers_in_a_subprocess_joining_the_cluster(ray_local, image_folder, pipe, tmp_path):
    names = ["red-square.png", "green-circle.png", "blue-triangle.png"]
    manifest = tmp_path / "images.txt"
    manifest.write_text("".join(f"{image_folder / n}\n" for n in names))
    out = tmp_path / "answers"
    question = "what shape is it?"
    blip2 = Path(sys.executable).with_name("blip2")
    result = subprocess.run(
        [str(blip2), "ray-batch", "answer", str(manifest), "--question", question, "--model", "mini", "--out",
         str(out), "--address", ray_local.get_runtime_context().gcs_address, "--batch-size", "3", "--no-progress",
         "--num-beams", "2"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"{out}: 3 images done, 0 skipped (already there), 0 failed, 1 shards written in " \
        + result.stdout.strip().rsplit(" in ", 1)[1]
    stored = {Path(name).name: row["answer"] for name, row in rows(out).items()}
    serial = pipe.answer([str(image_folder / n) for n in names], question, num_beams=2)
    assert [stored[n] for n in names] == serial
