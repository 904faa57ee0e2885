"""Fixtures shared by the inference test modules."""

from __future__ import annotations

import pytest

import tiny_models as T


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: the tiny models run faster and steadier on 2 shared cores."""
    yield from T.one_torch_thread()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """The real sample photos (skimage / scikit-learn) saved once per test run, as files in one folder."""
    return T.saved_once(tmp_path_factory.getbasetemp() / "shared-photos", T.save_sample_photos)


@pytest.fixture(scope="module")
def photos(photo_folder):
    """The sample photos' paths, in ``T.PHOTOS`` order."""
    return [photo_folder / name for name in T.PHOTOS]


@pytest.fixture(scope="module")
def hf_opt_folder(tmp_path_factory):
    """A random-weight HF ``Blip2ForConditionalGeneration`` (OPT) folder, saved once per test run."""
    return T.saved_once(tmp_path_factory.getbasetemp() / "shared-hf-opt", T.save_generation_folder)


@pytest.fixture(scope="module")
def hf_itm_folder(tmp_path_factory):
    """A random-weight HF ``Blip2ForImageTextRetrieval`` folder, saved once per test run."""
    return T.saved_once(tmp_path_factory.getbasetemp() / "shared-hf-itm", T.save_retrieval_folder)
