"""Data sets from real files: COCO captions, VQAv2, CSV/JSONL folders, easy-vqa; bad inputs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from blip2_runner.config import DatasetConfig
from blip2_runner.data import BadImages, DataError, ExampleOrder, easy_vqa_caption, load_dataset, load_image


def make_image(path, color=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path


def test_coco_caption_official_layout(tmp_path):
    make_image(tmp_path / "img" / "1.jpg")
    ann = {"images": [{"id": 1, "file_name": "1.jpg"}],
           "annotations": [{"image_id": 1, "caption": "A cat. "}, {"image_id": 1, "caption": "a kitten"}]}
    (tmp_path / "cap.json").write_text(json.dumps(ann))
    data = load_dataset("c", DatasetConfig(format="coco-caption", annotations="cap.json", images="img"), tmp_path)
    assert len(data) == 2 and data.fields == ("image", "image_id", "caption")
    assert data[0] == {"image": str(tmp_path / "img" / "1.jpg"), "image_id": "1", "caption": "A cat."}


def test_coco_caption_list_layout_and_errors(tmp_path):
    (tmp_path / "cap.json").write_text(json.dumps([{"image": "a.jpg", "caption": ["x", "y"]}, {"image": "b.jpg", "caption": "z"}]))
    data = load_dataset("c", DatasetConfig(format="coco-caption", annotations="cap.json"), tmp_path)
    assert [e["caption"] for e in data.examples] == ["x", "y", "z"]
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "a.jpg"}]))
    with pytest.raises(DataError, match=r"bad.json: \[0\]: missing field\(s\) 'caption'"):
        load_dataset("c", DatasetConfig(format="coco-caption", annotations="bad.json"), tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="broken.json: not valid JSON: line 1"):
        load_dataset("c", DatasetConfig(format="coco-caption", annotations="broken.json"), tmp_path)
    with pytest.raises(DataError, match="absent.json: no such file"):
        load_dataset("c", DatasetConfig(format="coco-caption", annotations="absent.json"), tmp_path)


def test_vqav2_two_file_layout(tmp_path):
    questions = {"questions": [{"question_id": 10, "image_id": 5, "question": "What is it?"}]}
    answers = {"annotations": [{"question_id": 10, "image_id": 5,
                                "answers": [{"answer": "dog"}] * 7 + [{"answer": "cat"}] * 3}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(answers))
    cfg = DatasetConfig(format="vqav2", questions="q.json", annotations="a.json", images="val2014", split="val")
    data = load_dataset("v", cfg, tmp_path)
    example = data[0]
    assert example["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000005.jpg")
    assert example["answer"] == "dog" and len(example["answers"]) == 10
    answers["annotations"][0]["question_id"] = 11
    (tmp_path / "a.json").write_text(json.dumps(answers))
    with pytest.raises(DataError, match=r"q.json: questions\[0\]: question_id 10 has no entry"):
        load_dataset("v", cfg, tmp_path)


def test_folder_csv_and_jsonl(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "data.csv").write_text("image,question,answer\na.png,what colour?,red|crimson\n")
    data = load_dataset("f", DatasetConfig(format="folder", path="f"), tmp_path)
    assert data[0]["answers"] == ["red", "crimson"] and data[0]["image"] == str(folder / "a.png")
    (folder / "data.csv").unlink()
    (folder / "caps.jsonl").write_text('{"image": "a.png", "text": "a red square"}\n\n{"image": "b.png", "text": "x"}\n')
    data = load_dataset("f", DatasetConfig(format="folder", path="f"), tmp_path)
    assert [e["caption"] for e in data.examples] == ["a red square", "x"]
    (folder / "caps.jsonl").write_text('{"image": "a.png", "text": "ok"}\n{"image": "b.png"}\n')
    with pytest.raises(DataError, match=r"caps.jsonl: line 2: missing field\(s\) 'text'"):
        load_dataset("f", DatasetConfig(format="folder", path="f"), tmp_path)
    (folder / "caps.jsonl").write_text('{"image": "a.png", "text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match="caps.jsonl: line 2: not valid JSON"):
        load_dataset("f", DatasetConfig(format="folder", path="f"), tmp_path)
    (folder / "caps.jsonl").unlink()
    (folder / "x.csv").write_text("img,caption\na.png,hi\n")
    with pytest.raises(DataError, match=r"x.csv: needs columns 'image' and 'text'.*found: img, caption"):
        load_dataset("f", DatasetConfig(format="folder", path="f"), tmp_path)
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset("f", DatasetConfig(format="folder", path="nowhere"), tmp_path)


def test_easy_vqa_views():
    questions = load_dataset("e", DatasetConfig(format="easy-vqa", split="test", limit=20))
    assert len(questions) == 20 and {"question", "answers", "caption"} <= set(questions.fields)
    assert all(len(e["answers"]) == 1 for e in questions.examples)
    captions = load_dataset("e", DatasetConfig(format="easy-vqa", split="test", view="captions", limit=5))
    assert captions.fields == ("image", "image_id", "caption")
    assert easy_vqa_caption([("what color is the triangle?", "blue"), ("is there a red shape?", "no")]) == "a blue triangle"
    assert easy_vqa_caption([("is there not a circle?", "no"), ("what color is the shape?", "teal")]) == "a teal circle"


def test_bad_image_is_reported_by_name_and_skipped(tmp_path):
    good = [make_image(tmp_path / f"{i}.png", (i * 40, 0, 0)) for i in range(3)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good[0].read_bytes()[:40])  # truncated PNG
    missing = tmp_path / "missing.png"
    examples = [{"image": str(p), "image_id": p.stem, "caption": "x"} for p in [good[0], corrupt, missing, good[1], good[2]]]
    from blip2_runner.data import Dataset

    data = Dataset("d", "folder", ("image", "image_id", "caption"), examples)
    messages = []
    bad = BadImages(messages.append)
    assert bad.load(data, 1)[0] == 3  # corrupt and missing skipped: the next good example
    assert bad.load(data, 2)[0] == 3
    assert bad.load(data, 1)[0] == 3
    assert len(messages) == 2  # each reported once
    assert "corrupt.png" in messages[0] and "missing.png" in messages[1] and "no such file" in messages[1]
    with pytest.raises(Exception, match="corrupt.png: cannot read image"):
        load_image(corrupt)


def test_example_order_is_a_pure_function_of_position():
    a = ExampleOrder(10, seed=3, key="t")
    b = ExampleOrder(10, seed=3, key="t")
    first = a.indices(0, 25)
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    assert first[:10] != first[10:20]  # a new permutation each epoch
    assert b.indices(7, 11) == first[7:18]  # resuming mid-epoch gives the same examples
    assert ExampleOrder(10, seed=4, key="t").indices(0, 10) != first[:10]
