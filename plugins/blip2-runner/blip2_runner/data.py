"""Data sets, image loading and the deterministic example order.

Every data set becomes a list of *examples*: plain dicts with ``image`` (a file path), ``image_id``
and the text fields of its kind:

- captions: ``caption`` (one example per (image, caption) pair);
- VQA: ``question``, ``answers`` (list of the reference answers), ``answer`` (the most common one).

Annotation problems (a missing file, a missing column, a malformed line) raise :class:`DataError`
naming the file and the line or field. A bad *image* (missing, truncated, not an image) is not
fatal: :func:`load_image` raises :class:`BadImageError`, and the batch builder warns with the file
name and uses the next good example instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from blip2core.plugin_api import Blip2Error

from blip2_runner.config import DatasetConfig

CAPTION_FIELDS = ("image", "image_id", "caption")
VQA_FIELDS = ("image", "image_id", "question", "answers", "answer")


class DataError(Blip2Error):
    """A data set's files are missing or malformed; the message names the file and the field/line."""


class BadImageError(DataError):
    """One image could not be read; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: cannot read image: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Dataset:
    """Examples of one data set, with the fields every example has."""

    name: str
    format: str
    fields: tuple[str, ...]
    examples: list[dict[str, Any]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def load_image(ref: Any) -> Image.Image:
    """A decoded RGB PIL image from a path (or a PIL image); BadImageError otherwise."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    path = str(ref)
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(path, "no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(path, f"{type(exc).__name__}: {exc}") from None


def stable_hash(*parts: Any) -> int:
    """A 63-bit integer from parts, the same in every process and Python run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


def _require(record: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record or record[k] in (None, "")]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}")


def _answers(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        out = []
        for item in value:
            if isinstance(item, dict):
                _require(item, ["answer"], where)
                out.append(str(item["answer"]))
            else:
                out.append(str(item))
        return out
    raise DataError(f"{where}: 'answer(s)' must be a string or a non-empty list, got {value!r}")


def _vqa_example(image: str, image_id: Any, question: str, answers: list[str], **extra: Any) -> dict[str, Any]:
    most_common = Counter(answers).most_common(1)[0][0]
    return {"image": image, "image_id": str(image_id), "question": question, "answers": answers,
            "answer": most_common, **extra}


def _load_coco_captions(cfg: DatasetConfig, resolve: Callable[[str], Path]) -> tuple[list[dict], str]:
    path = resolve(cfg.annotations)
    data = _read_json(path)
    images_dir = resolve(cfg.images) if cfg.images else path.parent
    examples = []
    if isinstance(data, dict) and "annotations" in data:
        if "images" not in data:
            raise DataError(f"{path}: COCO caption file has 'annotations' but no 'images' list")
        files = {}
        for i, image in enumerate(data["images"]):
            _require(image, ["id", "file_name"], f"{path}: images[{i}]")
            files[image["id"]] = image["file_name"]
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            _require(ann, ["image_id", "caption"], where)
            if ann["image_id"] not in files:
                raise DataError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
            examples.append({"image": str(images_dir / files[ann["image_id"]]), "image_id": str(ann["image_id"]),
                             "caption": str(ann["caption"]).strip()})
    elif isinstance(data, list):
        for i, record in enumerate(data):
            where = f"{path}: [{i}]"
            _require(record, ["image", "caption"], where)
            captions = record["caption"] if isinstance(record["caption"], list) else [record["caption"]]
            image_id = record.get("image_id", record["image"])
            for caption in captions:
                examples.append({"image": str(images_dir / record["image"]), "image_id": str(image_id),
                                 "caption": str(caption).strip()})
    else:
        raise DataError(f"{path}: expected COCO's {{'images', 'annotations'}} or a list of {{image, caption}} records")
    return examples, str(path)


def _load_vqav2(cfg: DatasetConfig, resolve: Callable[[str], Path]) -> tuple[list[dict], str]:
    ann_path = resolve(cfg.annotations)
    annotations = _read_json(ann_path)
    images_dir = resolve(cfg.images) if cfg.images else ann_path.parent
    examples = []
    if cfg.questions is not None:
        q_path = resolve(cfg.questions)
        questions = _read_json(q_path)
        if not isinstance(questions, dict) or "questions" not in questions:
            raise DataError(f"{q_path}: expected an object with a 'questions' list (VQAv2 questions file)")
        if not isinstance(annotations, dict) or "annotations" not in annotations:
            raise DataError(f"{ann_path}: expected an object with an 'annotations' list (VQAv2 annotations file)")
        by_qid = {}
        for i, ann in enumerate(annotations["annotations"]):
            _require(ann, ["question_id", "answers"], f"{ann_path}: annotations[{i}]")
            by_qid[ann["question_id"]] = (i, ann)
        for i, q in enumerate(questions["questions"]):
            where = f"{q_path}: questions[{i}]"
            _require(q, ["question_id", "image_id", "question"], where)
            if q["question_id"] not in by_qid:
                raise DataError(f"{where}: question_id {q['question_id']} has no entry in {ann_path}")
            j, ann = by_qid[q["question_id"]]
            answers = _answers(ann["answers"], f"{ann_path}: annotations[{j}].answers")
            try:
                name = cfg.image_template.format(split=cfg.split, image_id=q["image_id"])
            except (KeyError, ValueError, IndexError) as exc:
                raise DataError(f"image_template {cfg.image_template!r}: cannot format: {exc}") from None
            examples.append(_vqa_example(str(images_dir / name), q["image_id"], q["question"], answers,
                                         question_id=q["question_id"]))
        return examples, str(q_path)
    if not isinstance(annotations, list):
        raise DataError(f"{ann_path}: expected a list of {{image, question, answer}} records "
                        "(or give 'questions' too for VQAv2's two-file format)")
    for i, record in enumerate(annotations):
        where = f"{ann_path}: [{i}]"
        key = "answers" if "answers" in record else "answer"
        _require(record, ["image", "question", key], where)
        answers = _answers(record[key], f"{where}.{key}")
        examples.append(_vqa_example(str(images_dir / record["image"]), record.get("image_id", record["image"]),
                                     record["question"], answers, question_id=record.get("question_id", i)))
    return examples, str(ann_path)


def _folder_file(folder: Path, name: str | None) -> Path:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    if name is not None:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return path
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".jsonl"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DataError(f"{folder}: expected exactly one .csv or .jsonl annotation file (found: {found}); "
                        "name it with 'file'")
    return candidates[0]


def _load_folder(cfg: DatasetConfig, resolve: Callable[[str], Path]) -> tuple[list[dict], str]:
    folder = resolve(cfg.path)
    path = _folder_file(folder, cfg.file)
    rows: list[tuple[str, dict]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                columns = reader.fieldnames or []
                if "image" not in columns or not ({"text"} <= set(columns) or {"question", "answer"} <= set(columns)):
                    raise DataError(f"{path}: needs columns 'image' and 'text', or 'image', 'question' and 'answer' "
                                    f"(found: {', '.join(columns) or 'none'})")
                for row in reader:
                    rows.append((f"{path}: line {reader.line_num}", row))
        else:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append((f"{path}: line {number}", json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    examples = []
    for where, row in rows:
        if isinstance(row, dict) and "question" in row:
            key = "answers" if "answers" in row else "answer"
            _require(row, ["image", "question", key], where)
            raw = row[key]
            if isinstance(raw, str) and path.suffix.lower() == ".csv" and "|" in raw:
                raw = [a.strip() for a in raw.split("|")]
            examples.append(_vqa_example(str(folder / row["image"]), row.get("image_id") or row["image"],
                                         str(row["question"]), _answers(raw, f"{where}: {key}")))
        else:
            _require(row, ["image", "text"], where)
            examples.append({"image": str(folder / row["image"]), "image_id": str(row.get("image_id") or row["image"]),
                             "caption": str(row["text"]).strip()})
    kinds = {"question" in e for e in examples}
    if len(kinds) > 1:
        raise DataError(f"{path}: mixes caption rows (image, text) and VQA rows (image, question, answer)")
    return examples, str(path)


EASY_VQA_COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")


def easy_vqa_caption(qa_pairs: Iterable[tuple[str, str]]) -> str:
    """A caption for an easy-vqa image from its questions and answers: "a blue circle"."""
    color = shape = None
    for question, answer in qa_pairs:
        words = re.findall(r"[a-z]+", question.lower())
        if answer in EASY_VQA_COLORS:
            color = answer
        elif answer in EASY_VQA_SHAPES:
            shape = answer
        else:
            positive = (answer == "yes") != ("not" in words or "no" in words)
            if not positive:
                continue
        named = [w for w in words if w in EASY_VQA_COLORS or w in EASY_VQA_SHAPES]
        if answer in EASY_VQA_COLORS + EASY_VQA_SHAPES or answer in ("yes", "no"):
            for word in named:
                if word in EASY_VQA_COLORS:
                    color = color or word
                else:
                    shape = shape or word
    return " ".join(["a", color or "", shape or "shape"]).replace("  ", " ")


def easy_vqa_question_type(question: str, answer: str) -> str:
    """"colour", "shape", "yes-no" or "negated-yes-no" ("is there not ...", "is no ... present?")."""
    if answer in EASY_VQA_COLORS:
        return "colour"
    if answer in EASY_VQA_SHAPES:
        return "shape"
    words = re.findall(r"[a-z]+", question.lower())
    return "negated-yes-no" if "not" in words or "no" in words else "yes-no"


def _load_easy_vqa(cfg: DatasetConfig) -> tuple[list[dict], str]:
    try:
        import easy_vqa
    except ImportError:
        raise DataError("format 'easy-vqa' needs the easy-vqa package: pip install easy-vqa") from None
    if cfg.split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    per_image: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for q, a, i in zip(questions, answers, image_ids):
        per_image[i].append((q, a))
    captions = {i: easy_vqa_caption(pairs) for i, pairs in per_image.items()}
    source = str(Path(easy_vqa.__file__).parent / "data" / cfg.split)
    if cfg.view == "captions":
        return [{"image": paths[i], "image_id": f"easy-vqa-{cfg.split}-{i}", "caption": captions[i]}
                for i in sorted(per_image)], source
    return [
        _vqa_example(paths[i], f"easy-vqa-{cfg.split}-{i}", q, [a], caption=captions[i], question_id=n,
                     question_type=easy_vqa_question_type(q, a), image_questions=per_image[i])
        for n, (q, a, i) in enumerate(zip(questions, answers, image_ids))
    ], source


def load_dataset(name: str, cfg: DatasetConfig, base_dir: Path | str = ".") -> Dataset:
    """Read a data set's annotations (not its images)."""
    base = Path(base_dir)

    def resolve(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else base / p

    if cfg.format == "coco-caption":
        examples, source = _load_coco_captions(cfg, resolve)
    elif cfg.format == "vqav2":
        examples, source = _load_vqav2(cfg, resolve)
    elif cfg.format == "folder":
        examples, source = _load_folder(cfg, resolve)
    else:
        examples, source = _load_easy_vqa(cfg)
    if cfg.limit is not None:
        examples = examples[: cfg.limit]
    if not examples:
        raise DataError(f"data set {name!r} ({source}): no examples")
    fields = tuple(k for k in examples[0] if all(k in e for e in examples))
    return Dataset(name, cfg.format, fields, examples, source)


def concat_datasets(name: str, datasets: Sequence[Dataset]) -> Dataset:
    if len(datasets) == 1:
        return datasets[0]
    fields = tuple(f for f in datasets[0].fields if all(f in d.fields for d in datasets))
    examples = [e for d in datasets for e in d.examples]
    return Dataset(name, "+".join(d.format for d in datasets), fields, examples, ", ".join(d.source for d in datasets))


# ---------------------------------------------------------------------------------------------
# Deterministic order
# ---------------------------------------------------------------------------------------------


@dataclass
class ExampleOrder:
    """An endless, reproducible sequence of example indices: epoch ``e`` is a permutation of
    ``range(size)`` seeded by ``(seed, key, e)``. ``indices(start, count)`` is a pure function, so the
    data position is just an integer (how many examples the stream has handed out)."""

    size: int
    seed: int
    key: str
    shuffle: bool = True
    _cache: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            if self.shuffle:
                generator = torch.Generator().manual_seed(stable_hash("order", self.seed, self.key, epoch))
                self._cache[epoch] = torch.randperm(self.size, generator=generator).tolist()
            else:
                self._cache[epoch] = list(range(self.size))
            if len(self._cache) > 4:
                del self._cache[min(self._cache)]
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.size)
            out.append(self._epoch(epoch)[offset])
        return out


class BadImages:
    """Remembers unreadable images so each is reported once and skipped from then on."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.paths: dict[str, str] = {}
        self._warn = warn or (lambda message: warnings.warn(message, stacklevel=3))

    def report(self, error: BadImageError) -> None:
        if error.path not in self.paths:
            self.paths[error.path] = error.reason
            self._warn(f"skipping unreadable image {error.path}: {error.reason}")

    def load(self, dataset: Dataset, index: int, max_tries: int | None = None) -> tuple[int, Image.Image]:
        """Load example ``index``'s image; on failure report it and try the next example (wrapping).

        Returns the index actually used and its image.
        """
        tries = max_tries if max_tries is not None else len(dataset)
        for step in range(tries):
            candidate = (index + step) % len(dataset)
            path = dataset[candidate]["image"]
            if str(path) in self.paths:
                continue
            try:
                return candidate, load_image(path)
            except BadImageError as exc:
                self.report(exc)
        raise DataError(f"data set {dataset.name!r} ({dataset.source}): no readable image found "
                        f"(tried {tries}; {len(self.paths)} unreadable so far)")
