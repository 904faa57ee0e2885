"""`make demo`: the embedded default model `mini` answers questions about images it never saw.

    vision: EfficientNet-Lite0, real ImageNet weights, frozen              (plugin blip2-timm)
    bridge: instruction-aware Q-Former from all-MiniLM-L6-v2, 8 queries,   (plugin blip2-mini)
            trained by `blip2 train` on recipes/mini-stage1.yaml, -stage2, -stage3
    llm:    SmolLM2-135M-Instruct, real weights, frozen                    (plugin blip2-llama)

`mini` was trained on easy-vqa's training split only (synthetic 64x64 images of one coloured shape);
everything below comes from easy-vqa's TEST split, except the last photo. Runs offline.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import easy_vqa
import skimage.data

from blip2core import load_pipeline

#: test questions shown: (image index, question index within that image), a few of every kind
SHOWN_IMAGES = (0, 1, 2, 3, 4, 5)
PER_IMAGE = 2


def test_questions() -> list[tuple[str, str, str]]:
    """(image path, question, true answer) for the first questions of a few test images."""
    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    by_image: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for q, a, i in zip(questions, answers, image_ids):
        by_image[i].append((q, a))
    picked = []
    for image in SHOWN_IMAGES:
        for q, a in by_image[image][:PER_IMAGE]:
            picked.append((paths[image], q, a))
    return picked


def main() -> None:
    start = time.perf_counter()
    pipe = load_pipeline("mini")
    print(f"loaded `mini` in {time.perf_counter() - start:.1f} s "
          "(the first run also dequantises SmolLM2's GGUF once into the cache)")
    try:
        from blip2_mini.model import read_card

        accuracy = read_card().get("eval", {}).get("exact_match")
        if accuracy is not None:
            print(f"its exact-match accuracy on the whole easy-vqa test split: {accuracy:.2f}%")
    except ImportError:
        pass

    print("\neasy-vqa TEST questions (never seen in training):")
    start = time.perf_counter()
    right = 0
    picked = test_questions()
    for path, question, truth in picked:
        answer = pipe.answer(path, question, num_beams=1, max_new_tokens=5)[0]
        correct = answer.strip().lower() == truth
        right += correct
        mark = "ok " if correct else "XX "
        print(f"  {mark} {path.split('/')[-1]:>8}  {question:<42} model: {answer:<10} truth: {truth}")
    print(f"  {right}/{len(picked)} right ({time.perf_counter() - start:.1f} s)")

    paths = easy_vqa.get_test_image_paths()
    images = [paths[i] for i in SHOWN_IMAGES[:4]]
    captions = pipe.caption(images, num_beams=1, max_new_tokens=6)
    print("\ncaptions of test images (pipe.caption, no prompt):")
    for path, text in zip(images, captions):
        print(f"  {path.split('/')[-1]:>8}  {text}")

    cat = skimage.data.chelsea()
    print("\na real photo (skimage's cat). `mini` has only ever seen synthetic shapes, so expect a")
    print("colour and a shape name, not 'cat':")
    for question in ("what color is the shape?", "what shape is in the image?"):
        print(f"  {question:<30} {pipe.answer(cat, question, num_beams=1, max_new_tokens=5)[0]}")
    print("\nmore: blip2 ask --model mini IMAGE \"what shape is in the image?\"; "
          "blip2 explain --model mini IMAGE \"what color is the shape?\" --out attention.png")
    print(json.dumps({"demo_right": right, "demo_total": len(picked)}))


if __name__ == "__main__":
    main()
