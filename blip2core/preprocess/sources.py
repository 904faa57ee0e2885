"""What each user input is, what to call it in errors, and how to read its encoded bytes.

An input is one of: a path (``str`` / ``os.PathLike``), an ``http(s)://`` URL, encoded bytes
(``bytes`` / ``bytearray`` / ``memoryview``), a binary file object, a ``PIL.Image.Image``, a numpy
array (``[H, W]`` or ``[H, W, C]``, C in 1..4; ``[B, H, W, C]`` counts as B images) or a torch
tensor (``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``; ``[B, C, H, W]`` / ``[B, H, W, C]`` count as B images).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from blip2core.preprocess.errors import ImageLoadError

#: downloads larger than this are refused before they fill memory
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024

ENCODED, DECODED = "encoded", "decoded"


@dataclass(frozen=True)
class Source:
    """One image of a batch.

    Attributes:
        item: the input itself (for a B-image array or tensor, one ``[..]`` slice of it).
        name: how errors refer to it: the path or URL, ``"bytes[i]"``, a file object's name, or ``"item i"``.
        index: position in the flattened batch.
    """

    item: Any
    name: str
    index: int

    @property
    def kind(self) -> str:
        """``"encoded"`` (bytes to decode: path, URL, bytes, file) or ``"decoded"`` (PIL, array, tensor)."""
        return DECODED if isinstance(self.item, (Image.Image, np.ndarray, torch.Tensor)) else ENCODED


def _is_single(images: Any) -> bool:
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)):
        return True
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return images.ndim != 4
    return hasattr(images, "read")


def _is_batch_array(item: Any) -> bool:
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4


def _name(item: Any, index: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, os.PathLike):
        return os.fspath(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"bytes[{index}]"
    filename = getattr(item, "filename", None) if isinstance(item, Image.Image) else getattr(item, "name", None)
    if isinstance(filename, (str, os.PathLike)) and os.fspath(filename):
        return os.fspath(filename)
    return f"item {index}"


def _split_batch(item: np.ndarray | torch.Tensor) -> list[Any]:
    """[B, H, W, C] or (tensors) [B, C, H, W] -> B images in the layout ``to_uint8_chw`` reads."""
    if isinstance(item, torch.Tensor) and item.shape[1] in (1, 2, 3, 4):
        return list(item.unbind(0))  # BCHW (torch's convention wins when both would fit)
    if item.shape[-1] in (1, 2, 3, 4):
        return [x.permute(2, 0, 1) if isinstance(x, torch.Tensor) else x for x in item]
    return list(item)  # reported per image by to_uint8_chw


def flatten_inputs(images: Any) -> list[Source]:
    """A batch (or one image) -> one ``Source`` per image; 4-D arrays / tensors are split."""
    if images is None:
        return []
    if _is_single(images):
        images = [images]
    elif _is_batch_array(images):
        images = [images]
    sources: list[Source] = []
    for item in images:
        for part in _split_batch(item) if _is_batch_array(item) else [item]:
            index = len(sources)
            sources.append(Source(part, _name(part, index), index))
    return sources


def is_url(item: Any) -> bool:
    return isinstance(item, str) and item[:8].lower().startswith(("http://", "https://"))


def read_encoded(source: Source, *, allow_urls: bool = True, url_timeout: float = 10.0) -> bytes:
    """The encoded bytes of a path / URL / bytes / file-object input.

    Raises:
        ImageLoadError: missing or unreadable file, failed download, text-mode file, unknown input type.
    """
    item, name = source.item, source.name
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if is_url(item):
        if not allow_urls:
            raise ImageLoadError(name, "URLs are disabled (allow_urls=False)")
        return _download(item, url_timeout)
    if isinstance(item, (str, os.PathLike)):
        try:
            with open(item, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ImageLoadError(name, "no such file") from None
        except IsADirectoryError:
            raise ImageLoadError(name, "is a directory, not an image file") from None
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    if hasattr(item, "read"):
        try:
            data = item.read()
        except Exception as exc:
            raise ImageLoadError(name, f"cannot read file object ({type(exc).__name__}: {exc})") from None
        if isinstance(data, str):
            raise ImageLoadError(name, "file object is open in text mode; open it with 'rb'")
        return bytes(data)
    raise ImageLoadError(
        name,
        f"unsupported input type {type(item).__name__} (expected a path, URL, bytes, binary file, "
        "PIL image, numpy array or torch tensor)",
    )


def _download(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "blip2core"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection
        raise ImageLoadError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageLoadError(url, f"download failed (no network?): {reason}") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageLoadError(url, f"download is larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
    return data
