"""Property-based tests (hypothesis) of the parsers users feed by hand and of the image decoders.

Each parser either returns a valid object or raises its documented error type (SpecError,
ImageLoadError, ValueError / TypeError for the prompt builder) whose message names the input;
never another exception, never a hang. The decoders: ``fast`` and ``exact`` agree on every random
valid and mutated file, pixel for pixel or by both refusing it.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from blip2_runner.config import RunConfig
from blip2core.errors import SpecError
from blip2core.inference.prompts import BUILTIN_STYLES, caption_prompt, format_questions
from blip2core.preprocess.decode import load_pil, load_tensor, pil_to_chw
from blip2core.preprocess.errors import ImageLoadError
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess.sources import Source
from blip2core.spec import PipelineSpec, read_structured_file

#: modest, deterministic (no example database written into the working tree), no per-example deadline
PROPERTY = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------- strategies
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
#: anything a YAML / JSON document can hold
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=25)
names = st.sampled_from(["eva-vit", "qformer", "opt", "", "nonexistent", "EVA-VIT"]) | st.text(max_size=10)
components = st.fixed_dictionaries({"name": names}, optional={"options": documents})
SPEC_KEYS = ("vision", "bridge", "llm", "preprocessor", "quantize", "weights", "image_token_id", "styles",
             "device", "dtype", "seed")


@st.composite
def spec_like(draw) -> dict:
    """Mostly well-formed specs with some fields replaced by anything (wrong types, unknown keys)."""
    data = {"vision": draw(components), "bridge": draw(components)}
    for key in draw(st.lists(st.sampled_from(SPEC_KEYS + ("unknown_key",)), max_size=4, unique=True)):
        data[key] = draw(st.one_of(documents, components, st.lists(st.text(max_size=8), max_size=3)))
    return data


valid_specs = st.fixed_dictionaries(
    {"vision": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=10)}),
     "bridge": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=10)})},
    optional={
        "weights": st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s), max_size=3),
        "styles": st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=3),
        "image_token_id": st.none() | st.integers(0, 2**31),
        "dtype": st.sampled_from(["float32", "bfloat16", "float16", "auto"]),
        "seed": st.none() | st.integers(0, 2**63 - 1),
    })


# ------------------------------------------------------------------------------------ the spec
@PROPERTY
@given(st.one_of(spec_like(), documents))
def test_spec_from_dict_gives_a_spec_or_a_spec_error(data):
    try:
        spec = PipelineSpec.from_dict(data, source="hostile.yaml")
    except SpecError as exc:
        assert str(exc).startswith("hostile.yaml"), str(exc)
    else:
        assert isinstance(spec, PipelineSpec)


@PROPERTY
@given(valid_specs, st.sampled_from([".yaml", ".json"]))
@example({"vision": {"name": "0"}, "bridge": {"name": "0E0"}, "styles": {"a": "1e-6"}, "weights": ["2e3"]}, ".yaml")
def test_a_valid_spec_survives_a_round_trip_through_its_file(data, suffix):
    """Strings that read as numbers (``"1e-6"``, which the spec loader reads as YAML 1.2 does) came
    back as floats: to_file wrote them unquoted."""
    spec = PipelineSpec.from_dict(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"spec{suffix}"
        spec.to_file(path)
        again = PipelineSpec.from_file(path)
    assert again.model_dump() == spec.model_dump()


@st.composite
def yaml_texts(draw) -> str:
    """YAML text: a dumped document, then perhaps cut, spliced with YAML syntax, or aliased."""
    text = yaml.safe_dump(draw(st.one_of(spec_like(), documents)), sort_keys=False)
    edit = draw(st.sampled_from(["none", "cut", "splice", "alias", "self-alias"]))
    if edit == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif edit == "splice":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["&a ", "*a", "!!python/object:os.system ", "- ", ": ", "{", "]", "\t",
                                     "\x00", "%YAML 9.9\n", "? ", "<<: *a\n", "'", '"', "\ufeff"]))
        text = text[:at] + junk + text[at:]
    elif edit == "alias":
        text = "x: &a [1, 2, 3]\n" + text.replace("\n", " ", 0) + "y: [*a, *a, *a]\n"
    elif edit == "self-alias":
        text = "vision: &v {name: eva-vit, options: {again: *v}}\n" + text
    return text


@PROPERTY
@given(yaml_texts())
def test_any_yaml_text_gives_a_spec_or_a_spec_error_naming_the_file(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            PipelineSpec.from_file(path)
        except SpecError as exc:
            assert str(exc).startswith(str(path)), str(exc)


@PROPERTY
@given(st.binary(max_size=200), st.sampled_from([".yaml", ".json", ".toml", ".txt"]))
def test_any_bytes_read_as_a_structured_file_give_data_or_a_spec_error(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(data)
        try:
            read_structured_file(path)
        except SpecError as exc:
            assert str(exc).startswith(str(path)), str(exc)


# ----------------------------------------------------------------------------- the RUN.yaml
RUN = {
    "pipeline": {"vision": {"name": "eva-vit"}, "bridge": {"name": "qformer"}},
    "datasets": {"d": {"format": "easy-vqa", "split": "train"}},
    "tasks": [{"name": "vqa", "train": "d", "eval": "d"}],
    "training": {"steps": 10, "batch_size": 2},
    "output_dir": "out",
}
RUN_PATHS = [("pipeline",), ("datasets",), ("datasets", "d"), ("datasets", "d", "format"), ("datasets", "d", "limit"),
             ("tasks",), ("tasks", 0), ("tasks", 0, "train"), ("tasks", 0, "weight"), ("tasks", 0, "options"),
             ("training",), ("training", "steps"), ("training", "precision"), ("optimizer",), ("schedule",),
             ("seed",), ("output_dir",), ("feature_cache",), ("unknown",), ("optimizer", "betas")]


@st.composite
def run_like(draw) -> dict:
    """The RUN above with a few fields replaced by anything or deleted."""
    data = json.loads(json.dumps(RUN))
    for path in draw(st.lists(st.sampled_from(RUN_PATHS), max_size=3)):
        parent = data
        for key in path[:-1]:
            if not isinstance(parent, (dict, list)):
                break
            try:
                parent = parent[key]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(path[-1], int)
                                             and path[-1] < len(parent)):
                if draw(st.booleans()) and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = draw(documents)
    return data


@PROPERTY
@given(st.one_of(run_like(), documents))
def test_run_config_from_dict_gives_a_config_or_a_spec_error(data):
    try:
        config = RunConfig.from_dict(data, source="RUN.yaml")
    except SpecError as exc:
        assert str(exc).startswith("RUN.yaml"), str(exc)
    else:
        assert len(config.digest()) == 16  # a digest walks every value: it must end


@PROPERTY
@given(run_like(), st.sampled_from(["none", "self-alias", "laughs"]))
def test_run_yaml_files_with_aliases_give_a_config_or_a_spec_error(data, alias):
    text = yaml.safe_dump(data, sort_keys=False)
    if alias == "self-alias":
        text = text.replace("tasks:\n", "tasks:\n- &t {name: vqa, options: {again: *t}}\n", 1)
    elif alias == "laughs":
        rows = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
        rows += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
        text = text.replace("tasks:\n", "tasks:\n- {name: vqa, options: {" + ", ".join(rows) + "}}\n", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "RUN.yaml"
        path.write_text(text)
        try:
            config = RunConfig.from_file(path)
        except SpecError as exc:
            assert str(exc).startswith(str(path)), str(exc)
        else:
            assert alias == "none"
            assert len(config.digest()) == 16


# ------------------------------------------------------------------------------ the decoders
PIL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F", "La", "RGBa"]
#: which formats Pillow can write each mode in (others are converted first)
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


@st.composite
def image_files(draw) -> bytes:
    """A small image in a random mode and format, sometimes with transparency or EXIF orientation."""
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba = Image.fromarray(pixels, "RGBA")
    image = rgba.convert(draw(st.sampled_from(PIL_MODES)))
    if image.mode == "F":  # float pixels are intensities in [0, 1] (decode.py); 0..255 floats are refused
        image = Image.fromarray(np.asarray(image) / 255.0)
    fmt = draw(st.sampled_from(FORMATS))
    buffer = io.BytesIO()
    kwargs = {}
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8))
        kwargs["exif"] = exif.tobytes()
    if fmt == "JPEG" and draw(st.booleans()):
        kwargs["progressive"] = True
    try:
        image.save(buffer, fmt, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        buffer = io.BytesIO()
        rgba.convert("RGBA" if fmt in ("PNG", "WEBP", "TIFF") else "RGB").save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@st.composite
def mutated(draw, files) -> bytes:
    """A valid file with bytes flipped, cut short, duplicated or spliced with junk."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "repeat", "insert", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at: at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at: at + 8] = bytes(min(8, len(data) - at))
    return bytes(data)


def decode_both(data: bytes, path: Path) -> tuple[object, object]:
    """(fast result, exact result): a uint8 [3, H, W] array or the ImageLoadError."""
    path.write_bytes(data)
    results = []
    for mode, load in (("fast", load_tensor), ("exact", load_pil)):
        options = PreprocessOptions(mode=mode, max_image_pixels=10_000)
        try:
            out = load(Source(str(path), str(path), 0), options)
        except ImageLoadError as exc:
            assert exc.source == str(path) and str(exc).startswith(str(path))
            results.append(exc)
            continue
        chw = out if mode == "fast" else pil_to_chw(out)
        results.append(chw.expand(3, -1, -1).numpy())
    return results[0], results[1]


@PROPERTY
@given(image_files())
def test_fast_and_exact_decode_every_valid_file_to_the_same_pixels(data):
    with tempfile.TemporaryDirectory() as tmp:
        fast, exact = decode_both(data, Path(tmp) / "image.bin")
    assert not isinstance(exact, Exception), exact
    assert not isinstance(fast, Exception), fast
    np.testing.assert_array_equal(fast, exact)


@settings(PROPERTY, max_examples=100)
@given(mutated(image_files()))
def test_fast_and_exact_agree_on_every_mutated_file(data):
    """Both give the same pixels or both refuse, each with an ImageLoadError naming the file; a
    corrupt file that one decoder reads and the other refuses would make a result depend on ``mode``."""
    with tempfile.TemporaryDirectory() as tmp:
        fast, exact = decode_both(data, Path(tmp) / "image.bin")
    if isinstance(fast, Exception) or isinstance(exact, Exception):
        assert isinstance(fast, Exception) == isinstance(exact, Exception), (fast, exact)
    else:
        np.testing.assert_array_equal(fast, exact)


# ---------------------------------------------------------------------------- prompt builder
@PROPERTY
@given(st.text(max_size=30), st.text(max_size=30), st.lists(st.text(max_size=200), max_size=5))
def test_format_questions_puts_each_question_in_the_template_unchanged(prefix, suffix, questions):
    assume("{}" not in prefix + "x" + suffix)
    template = prefix + "{}" + suffix
    try:
        prompts = format_questions(template, questions)
    except ValueError as exc:
        assert "empty" in str(exc) and any(not q.strip() for q in questions)
    else:
        assert prompts == [prefix + q + suffix for q in questions]


@PROPERTY
@given(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3))
def test_format_questions_refuses_a_template_without_exactly_one_slot(template, questions):
    assume(template.count("{}") != 1)
    with pytest.raises(ValueError, match="exactly one"):
        format_questions(template, questions)


@PROPERTY
@given(st.none() | st.text(max_size=20), st.none() | st.text(max_size=40),
       st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=3))
def test_caption_prompt_is_the_prompt_or_a_known_style(style, prompt, spec_styles):
    styles = {**BUILTIN_STYLES, **(spec_styles or {})}
    try:
        out = caption_prompt(style, prompt, spec_styles)
    except ValueError as exc:
        assert prompt is None and style not in styles and repr(style) in str(exc)
    else:
        assert out == (prompt if prompt is not None else styles["short" if style is None else style])
