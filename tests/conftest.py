"""Fixtures shared by the inference test modules."""

from __future__ import annotations

import pytest

from blip2core.inference import testing as T


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: the tiny models run faster and steadier on 2 shared cores."""
    yield from T.one_torch_thread()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The real sample photos (skimage / scikit-learn / matplotlib) saved once as files."""
    folder = T.saved_once(tmp_path_factory.getbasetemp() / "shared-photos", T.save_sample_photos)
    return [folder / name for name in T.PHOTOS]
