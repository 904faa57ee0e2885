"""Fixtures of the blip2-serve tests: the real `mini` model (loaded once per session) and easy-vqa
test images (64 x 64 PNG files, one coloured shape each)."""

from __future__ import annotations

from pathlib import Path

import easy_vqa
import pytest

from blip2core import load_pipeline


@pytest.fixture(scope="session")
def mini():
    return load_pipeline("mini")


@pytest.fixture(scope="session")
def image_paths() -> list[Path]:
    """Eight easy-vqa test images (64 x 64 PNG: one coloured shape each)."""
    paths = easy_vqa.get_test_image_paths()
    return [Path(paths[i]) for i in range(8)]

