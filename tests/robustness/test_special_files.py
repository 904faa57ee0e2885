"""Only regular files are read as images, and no more than ``max_file_bytes`` of them: a FIFO
named ``x.jpg`` or ``/dev/zero`` is refused by name without being read (it used to hang, or read
until memory ran out), a file over the cap is refused from its size; the other images go on."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys

import pytest

from blip2core.loading import resolve_spec
from blip2core.preprocess import ImagePreprocessor
from blip2core.preprocess.options import DEFAULT_MAX_FILE_BYTES, PreprocessOptions
from blip2core.spec import PipelineSpec
from cli_process import run_in_process as blip2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a regression must fail, not hang the suite or exhaust the machine's memory
TIMEOUT_S = 120
MEMORY_LIMIT = 3 * 2**30



def blip2_process(*args) -> subprocess.CompletedProcess:
    """``python -m blip2core.cli ARGS`` in a child process with a time limit and a memory limit."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "blip2core.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=TIMEOUT_S, preexec_fn=limit_memory)


def test_a_fifo_and_dev_zero_are_refused_by_name_without_being_read(hf_opt_folder, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    os.mkfifo(tmp_path / "x.jpg")
    os.mkfifo(folder / "y.jpg")  # in a folder: not an image file, not listed
    (folder / photos[1].name).write_bytes(photos[1].read_bytes())
    result = blip2_process("caption", tmp_path / "x.jpg", "/dev/zero", folder, "--model", hf_opt_folder, "--json",
                           "--max-new-tokens", "2", "--num-beams", "1")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert [r["image"] for r in out["results"]] == [str(folder / photos[1].name)]
    fifo = "is a FIFO (named pipe), not a regular file; refused without reading it"
    device = "is a character device, not a regular file; refused without reading it"
    assert out["failures"] == [{"image": str(tmp_path / "x.jpg"), "error": fifo},
                               {"image": "/dev/zero", "error": device}]
    assert f"error: {tmp_path / 'x.jpg'}: {fifo}" in result.stderr and "Traceback" not in result.stderr


def test_a_file_over_the_default_cap_is_refused_from_its_size(hf_itm_folder, photos, tmp_path, capsys):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(DEFAULT_MAX_FILE_BYTES + 1)  # sparse: takes no disk space
    code, stdout, err = blip2(capsys, "features", huge, photos[0], "--out", tmp_path / "f.safetensors",
                              "--model", hf_itm_folder, "--json", "--no-progress")
    assert code == 1
    assert json.loads(stdout)["failures"] == [{"image": str(huge), "error": (
        "larger than max_file_bytes=268,435,456 bytes; refused (raise the preprocessor option to accept it)")}]
    assert DEFAULT_MAX_FILE_BYTES == 256 * 2**20


def test_the_cap_is_a_preprocessor_option_of_the_spec(hf_itm_folder, photos, tmp_path, capsys):
    small, large = sorted(photos[:2], key=lambda p: p.stat().st_size)
    cap = small.stat().st_size
    spec = tmp_path / "capped.yaml"
    data = resolve_spec(hf_itm_folder).model_dump()
    PipelineSpec.from_dict({**data, "preprocessor": {"name": "standard", "options": {"max_file_bytes": cap}}}
                           ).to_file(spec)
    code, stdout, err = blip2(capsys, "features", small, large, "--out", tmp_path / "f.safetensors", "--spec", spec,
                              "--json", "--no-progress")
    assert code == 1, err
    document = json.loads(stdout)
    assert document["written"] == 1 and [f["image"] for f in document["failures"]] == [str(large)]
    assert f"larger than max_file_bytes={cap:,} bytes" in document["failures"][0]["error"]


def test_a_file_object_is_read_up_to_the_cap_only(photos):
    data = photos[1].read_bytes()
    capped = ImagePreprocessor(options=PreprocessOptions(max_file_bytes=len(data) - 1))
    result = capped.preprocess_batch([io.BytesIO(data), data])
    assert [f.message for f in result.failures] == [
        f"larger than max_file_bytes={len(data) - 1:,} bytes; refused (raise the preprocessor option to accept it)"]
    assert result.indices == [1]  # bytes already in memory are not capped
    assert ImagePreprocessor(options=PreprocessOptions(max_file_bytes=len(data))).preprocess_batch(
        [io.BytesIO(data)]).ok
