"""One local Ray instance (this machine's 2 CPUs) for the module, and a folder of shape images."""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, colour: tuple[int, int, int], size: int = 48) -> Image.Image:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (8, 8, size - 8, size - 8)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(size // 2, 6), (size - 6, size - 6), (6, size - 6)], fill=colour)
    return image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 PNGs (4 colours x 3 shapes, named colour-shape.png) and broken.png, which is not an image."""
    folder = tmp_path_factory.mktemp("shapes")
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            draw_shape(shape, rgb).save(folder / f"{colour}-{shape}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    return folder


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance limited to 2 CPUs (start-up time printed), shut down afterwards.

    Its workers run at the test's own priority: Ray adds 15 to a worker's niceness by default,
    which on a busy 2-core machine starves the model-loading actors for minutes."""
    ray = pytest.importorskip("ray")
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"\nray.init(num_cpus=2): {time.perf_counter() - started:.1f}s")
    yield ray
    ray.shutdown()
    if niceness is None:
        os.environ.pop("RAY_worker_niceness")
    else:
        os.environ["RAY_worker_niceness"] = niceness


@pytest.fixture(scope="module")
def pipe():
    """The trained default model, loaded in this process for the serial reference results."""
    from blip2core import load_pipeline

    return load_pipeline("mini")
