"""Inputs with nothing in them are errors, not silent successes: an empty image folder, an empty
question, a spec whose weights file does not exist; and plain-text output stays one line per
result whatever the texts hold."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from safetensors.torch import save_file
import torch

from blip2core import load_pipeline
from blip2core.cli.main import cli
from cli_process import run_in_process as run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.parametrize("command", [["caption"], ["classify", "--labels", "cat,dog"]])
def test_an_empty_folder_is_an_error_naming_it(capsys, tmp_path, hf_opt_folder, command):
    empty = tmp_path / "no-photos"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image\n")
    code, out, err = run_main(capsys, command[0], empty, *command[1:], "--model", hf_opt_folder)
    assert code == 1 and out == ""
    assert f"{empty}: no image files" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_empty_question_is_refused(capsys, hf_opt_folder, photos):
    code, out, err = run_main(capsys, "ask", photos[0], "what is it?", "  ", "--model", hf_opt_folder)
    assert code == 2 and out == "" and "question 1 is empty" in err and "Traceback" not in err
    pipe = load_pipeline(hf_opt_folder)
    with pytest.raises(ValueError, match="question 0 is empty"):
        pipe.answer(photos[0], "")
    assert len(pipe.answer(photos[0], "what is it?", max_new_tokens=2)) == 1  # a real question still works


SPEC = """\
vision: {name: eva-vit, options: {image_size: 32, patch_size: 8, hidden_size: 48, num_hidden_layers: 1,
                                  num_attention_heads: 4, intermediate_size: 64}}
bridge: {name: qformer}
weights: [%s]
"""


def test_spec_validate_refuses_weights_that_do_not_exist(capsys, tmp_path):
    save_file({"bridge.x": torch.zeros(1)}, str(tmp_path / "here.safetensors"))
    good = tmp_path / "good.yaml"
    good.write_text(SPEC % "here.safetensors")  # relative to the spec file
    code, out, err = run_main(capsys, "spec", "validate", good)
    assert code == 0 and "ok" in out, err

    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC % "here.safetensors, missing/stage2.safetensors")
    code, out, err = run_main(capsys, "spec", "validate", bad)
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{bad}: weights[1]: {tmp_path / 'missing' / 'stage2.safetensors'}: no such file or folder" in err
    assert "weights[0]" not in err


@pytest.mark.parametrize(
    "text,escaped",
    [("a cat", "a cat"), ("two\nlines", "two\\nlines"), ("tab\there", "tab\\there"), ("cr\r", "cr\\r"),
     ("back\\slash\\n", "back\\\\slash\\\\n")],
)
def test_plain_text_columns_escape_what_would_break_the_line(text, escaped):
    from blip2core.cli.inference_commands import plain_text

    assert plain_text(text) == escaped
    assert "\n" not in plain_text(text) and "\t" not in plain_text(text)


def unescape(column: str) -> str:
    return column.encode("latin-1", "backslashreplace").decode("unicode_escape")


def test_caption_plain_output_is_one_line_per_image_for_names_with_newlines_and_tabs(tmp_path, hf_opt_folder, photos):
    folder = tmp_path / "odd names"
    folder.mkdir()
    names = [folder / "two\nlines.png", folder / "tab\there.jpg"]
    for source, target in zip(photos[:2], names, strict=True):
        shutil.copy(source, target)
    args = ["caption", str(folder), "--model", str(hf_opt_folder), "--max-new-tokens", "4"]
    plain = CliRunner().invoke(cli, args, catch_exceptions=False)
    as_json = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert plain.exit_code == 0 and as_json.exit_code == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)
    rows = [[unescape(column) for column in line.split("\t")] for line in lines]
    expected = [[r["image"], r["caption"]] for r in json.loads(as_json.stdout)["results"]]
    assert rows == expected and sorted(r[0] for r in rows) == sorted(map(str, names))
