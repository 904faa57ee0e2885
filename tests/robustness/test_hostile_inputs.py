"""Hostile inputs the other suites do not cover, table-driven: spec and run files built to exhaust
the parser (recursive aliases, "billion laughs", deep nesting, endless or huge files), weights of
the wrong kind (int / bool / complex tensors for float parameters), pickles and malformed state in
training checkpoints, unusual question text, plugins that exit at import, and a model folder whose
files lead out of it (``confine_to``).

Each case: one ``Error:`` line naming the input (or the documented exception, naming it, from the
API), exit code 1, no traceback, nothing written, and the process still answers a valid request.
Covered elsewhere: images of every kind (test_preprocess_inputs.py, test_special_files.py and the
property tests), pickles as weights and init_from (test_checkpoints.py, test_cli_no_traceback.py),
plugins failing to import or in a hook and duplicate names (test_plugins.py,
test_plugin_discovery_errors.py), empty and over-long questions (test_empty_inputs.py,
test_cli_no_traceback.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blip2core import load_pipeline
from blip2core.errors import CheckpointError, SpecError
from blip2core.loading import resolve_spec
from blip2core.spec import MAX_STRUCTURED_FILE_BYTES
from cli_process import error_lines, run_blip2
from cli_process import run_in_process as blip2
from plugin_factory import write_distribution

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VALID = "vision: {name: eva-vit, options: {num_hidden_layers: 1}}\nbridge: {name: qformer}\n"
LAUGHS = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(9))



def one_error_line(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("Error:")]
    return line


# ------------------------------------------------------------------------- spec and run files
SPEC_FILES = {
    "recursive alias": ("vision: &v {name: eva-vit, options: {again: *v}}\nbridge: {name: qformer}\n",
                        "vision.options.again: refers to itself (a recursive YAML alias)"),
    "billion laughs in options": (VALID.replace("{num_hidden_layers: 1}", "{num_hidden_layers: 1, x: *l8}")
                                  .replace("vision:", LAUGHS + "vision:", 1),
                                  "values once its aliases are expanded"),
    "deep nesting": (VALID + "styles: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    "nesting under the parser's limit": (VALID + "styles: " + "[" * 100 + "]" * 100 + "\n", "levels deep"),
    "binary": ("\x00\x01\x02\xff", "cannot read"),
    "a mapping key that is a list": ("? [a, b]\n: 1\n" + VALID, "not valid YAML"),
    "wrong types": ("vision: [eva-vit]\nbridge: 3\nweights: {a: 1}\nseed: '1'\n", "invalid pipeline spec"),
}


@pytest.mark.parametrize("case", list(SPEC_FILES))
def test_hostile_spec_files_are_one_line_naming_the_file(case, capsys, tmp_path):
    text, expected = SPEC_FILES[case]
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if case != "binary" else b"\xff\xfe\x00\x01")
    line = one_error_line(*blip2(capsys, "spec", "validate", path)[::2])
    assert str(path) in line or "spec.yaml" in line, line
    assert expected in line, line
    # the process is still usable
    path.write_text(VALID)
    code, out, err = blip2(capsys, "spec", "validate", path)
    assert code == 0 and "ok" in out, err


def test_endless_and_huge_spec_files_are_refused_without_reading_them_whole(capsys, tmp_path):
    line = one_error_line(*blip2(capsys, "spec", "validate", "/dev/zero")[::2])
    assert line == f"Error: /dev/zero: over {MAX_STRUCTURED_FILE_BYTES // 2**20} MiB, not a spec or run config"
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_STRUCTURED_FILE_BYTES + 1)
    assert "huge.yaml: over" in one_error_line(*blip2(capsys, "spec", "validate", huge)[::2])


@pytest.mark.parametrize("alias", ["recursive", "laughs"])
def test_run_yaml_aliases_are_refused_before_anything_walks_them(alias, tmp_path):
    """A RUN.yaml's free-form ``tasks.N.options`` went into a digest (json.dumps): a recursive alias
    raised ValueError there, a billion laughs ran out of memory."""
    from blip2_runner.config import RunConfig

    options = "&o {prompt: 'Q: {} A:', again: *o}" if alias == "recursive" else "{x: *l8}"
    path = tmp_path / "RUN.yaml"
    path.write_text((LAUGHS if alias == "laughs" else "") + textwrap_run(options))
    with pytest.raises(SpecError) as excinfo:
        RunConfig.from_file(path)
    assert str(excinfo.value).startswith(f"{path}: ")
    assert ("refers to itself" if alias == "recursive" else "aliases are expanded") in str(excinfo.value)


def textwrap_run(task_options: str) -> str:
    return (
        "pipeline: {vision: {name: eva-vit}, bridge: {name: qformer}}\n"
        "datasets: {d: {format: easy-vqa}}\n"
        f"tasks: [{{name: vqa, train: d, options: {task_options}}}]\n"
        "training: {steps: 1, batch_size: 1}\n"
        "output_dir: out\n"
    )


# ---------------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def opt_spec(hf_opt_folder):
    return resolve_spec(hf_opt_folder).model_copy(update={"weights": []})


@pytest.fixture(scope="module")
def bridge_state(opt_spec):
    pipe = load_pipeline(opt_spec)
    return pipe, {f"bridge.{k}": v.clone() for k, v in pipe.bridge.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.uint8, torch.bool, torch.complex64])
def test_weights_of_the_wrong_kind_are_refused_naming_file_and_key(dtype, bridge_state, opt_spec, hf_opt_folder,
                                                                   photos, tmp_path):
    """They used to be cast silently (complex with only a warning): an int checkpoint loaded as weights."""
    pipe, state = bridge_state
    path = tmp_path / "bad.safetensors"
    save_file({**state, "bridge.query_tokens": state["bridge.query_tokens"].to(dtype)}, str(path))
    with pytest.raises(CheckpointError) as excinfo:
        load_pipeline(opt_spec, weights=[path])
    assert str(excinfo.value) == (f"{path}: key 'bridge.query_tokens' (for 'query_tokens') holds {dtype} values, "
                                  "where torch.float32 weights were expected")
    save_file({**state, "bridge.query_tokens": state["bridge.query_tokens"].half()}, str(path))  # float: fine
    assert load_pipeline(opt_spec, weights=[path]).caption(photos[0], max_new_tokens=2, num_beams=1)


TRAINING_CHECKPOINTS = {
    "state.json without a step": ("state.json", json.dumps({"optimizer": {"param_groups": []}})),
    "state.json a list": ("state.json", "[1, 2]"),
    "state.json with a string step": ("state.json", json.dumps({"step": "7", "optimizer": {"param_groups": []}})),
    "state.json not JSON": ("state.json", "{"),
    "trainable.safetensors a pickle": ("trainable.safetensors", None),
    "optimizer.safetensors empty": ("optimizer.safetensors", ""),
}


@pytest.mark.parametrize("case", list(TRAINING_CHECKPOINTS))
def test_training_checkpoints_that_do_not_load_are_one_checkpoint_error(case, tmp_path):
    from blip2_runner.checkpoint import load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path, 1, {"bridge.x": torch.zeros(2)}, {"state": {}, "param_groups": []}, {}, keep=3)
    name, content = TRAINING_CHECKPOINTS[case]
    if content is None:
        torch.save({"bridge.x": Payload()}, folder / name)
    else:
        (folder / name).write_text(content)
    with pytest.raises(CheckpointError, match=rf"^{folder}: unreadable checkpoint"):
        load_checkpoint(folder)


class Payload:
    """What a malicious checkpoint pickles: unpickling it would run ``print``."""

    def __reduce__(self):
        return (print, ("this would run on load",))


# ------------------------------------------------------------------------------------- text
TEXTS = {
    "control characters": "what\x00 is\x07 it\x1b[31m?\r",
    "right-to-left and combining": "\u202eما هذا\u0301? \u05de\u05d4 \u05d6\u05d4",
    "emoji and astral planes": "is it a \U0001F408\u200d\u2B1B or \U0001D49C?",
    "scripts": "这是什么？ これは何ですか？ 이것은 무엇입니까? Что это?",
    "template braces": "what is {} and {0} and %s?",
    "very many lines": "is it\n" * 20,
}


@pytest.fixture(scope="module")
def opt_pipe(hf_opt_folder):
    return load_pipeline(hf_opt_folder)


@pytest.mark.parametrize("case", list(TEXTS))
def test_unusual_question_text_is_answered_like_any_other(case, opt_pipe, photos):
    [answer] = opt_pipe.answer(photos[0], TEXTS[case], max_new_tokens=3, num_beams=1)
    assert isinstance(answer, str)
    [caption] = opt_pipe.caption(photos[0], prompt=TEXTS[case], max_new_tokens=3, num_beams=1)
    assert isinstance(caption, str)


def test_text_that_is_not_unicode_is_refused_naming_the_question(opt_pipe, photos, capsys, hf_opt_folder):
    """A command-line byte that is not UTF-8 arrives as a lone surrogate, which tokenizers refuse
    with a TypeError: it is an input error naming the question."""
    with pytest.raises(ValueError, match=r"question 1 is not valid Unicode text \(a lone surrogate '\\udcff' at"):
        opt_pipe.answer(photos[0], ["what?", "what is \udcff it?"], max_new_tokens=2, num_beams=1)
    with pytest.raises(ValueError, match="the prompt is not valid Unicode"):
        opt_pipe.caption(photos[0], prompt="\ud800", max_new_tokens=2, num_beams=1)
    code, _, err = blip2(capsys, "ask", photos[0], "what is \udcff it?", "--model", hf_opt_folder)
    assert code == 2 and "question 0 is not valid Unicode text" in err and "Traceback" not in err


def test_unusual_text_through_the_cli_is_one_result_line_per_question(capsys, hf_opt_folder, photos):
    questions = [TEXTS["control characters"], TEXTS["scripts"], TEXTS["very many lines"]]
    code, out, err = blip2(capsys, "ask", photos[0], *questions, "--model", hf_opt_folder, "--num-beams", 1,
                           "--max-new-tokens", 2)
    assert code == 0, err
    assert len(out.splitlines()) == len(questions)  # newlines and escapes in a question do not break lines


# ---------------------------------------------------------------------------------- plugins
EXITING_PLUGINS = {
    "sys.exit at import": ("import sys\nsys.exit(3)\n", "import failed: SystemExit: 3"),
    "exit in a hook": ("from blip2core import hookimpl\n@hookimpl\ndef register_vision_encoders(register):\n"
                       "    raise SystemExit(4)\n", "register_vision_encoders raised SystemExit: 4"),
}


@pytest.mark.parametrize("case", list(EXITING_PLUGINS))
def test_a_plugin_that_exits_is_a_failed_plugin_not_the_end_of_blip2(case, tmp_path, monkeypatch):
    """A plugin's ``sys.exit()`` at import used to end ``blip2`` with its exit code and no message."""
    from blip2core.plugins import Plugins

    source, error = EXITING_PLUGINS[case]
    site = tmp_path / "site"
    write_distribution(site, "acme-vit", source)
    monkeypatch.syspath_prepend(str(site))
    plugins = Plugins()
    [info] = [i for i in plugins.infos if i.distribution == "acme-vit"]
    assert info.error == error
    assert plugins.registry.get("vision_encoder", "eva-vit")  # the others still serve


def test_the_cli_names_a_plugin_that_exits_at_import(tmp_path):
    site = tmp_path / "site"
    write_distribution(site, "acme-vit", EXITING_PLUGINS["sys.exit at import"][0])
    spec = tmp_path / "spec.yaml"
    spec.write_text("vision: {name: acme-vit}\nbridge: {name: qformer}\n")
    result = run_blip2("spec", "validate", spec, site=site)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "unknown vision encoder 'acme-vit'. Plugin 'acme-vit' failed to import: SystemExit: 3" in line, line


# ------------------------------------------------------------------------- confined folders
@pytest.fixture
def model_copy(hf_opt_folder, tmp_path):
    folder = tmp_path / "untrusted-model"
    shutil.copytree(hf_opt_folder, folder)
    return folder


def test_a_model_folder_loads_confined_to_itself(model_copy, photos):
    pipe = load_pipeline(model_copy, confine_to=model_copy)
    assert pipe.caption(photos[0], max_new_tokens=2, num_beams=1)


def test_a_symlink_out_of_a_confined_folder_is_refused_by_name(model_copy, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(model_copy / "model.safetensors", outside)
    (model_copy / "model.safetensors").symlink_to(outside)
    load_pipeline(model_copy)  # by default a symlink is followed, like any path the user gives
    with pytest.raises(SpecError) as excinfo:
        load_pipeline(model_copy, confine_to=model_copy)
    assert str(excinfo.value).startswith(f"weights.0: {model_copy / 'model.safetensors'} (a symlink to {outside})")


@pytest.mark.parametrize("reference", ["../outside.safetensors", "{absolute}", "link/../../outside.safetensors"])
def test_a_spec_naming_files_outside_its_confined_folder_is_refused(reference, tmp_path, bridge_state):
    _, state = bridge_state
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    save_file(state, str(outside))
    (folder / "link").symlink_to(tmp_path / "model")
    reference = reference.format(absolute=outside)
    (folder / "pipeline.yaml").write_text(VALID + f"weights: ['{reference}']\n")
    with pytest.raises(SpecError, match=r"^weights\.0: .* is outside .*, which the spec was confined to"):
        load_pipeline(folder, confine_to=folder)
