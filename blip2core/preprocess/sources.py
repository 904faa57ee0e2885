"""What each user input is, what to call it in errors, and how to read its encoded bytes.

An input is one of: a path (``str`` / ``os.PathLike``), an ``http(s)://`` URL, encoded bytes
(``bytes`` / ``bytearray`` / ``memoryview``), a binary file object, a ``PIL.Image.Image``, a numpy
array (``[H, W]`` or ``[H, W, C]``, C in 1..4; ``[B, H, W, C]`` counts as B images) or a torch
tensor (``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``; ``[B, C, H, W]`` / ``[B, H, W, C]`` count as B images).
"""

from __future__ import annotations

import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from blip2core.preprocess.errors import ImageLoadError
from blip2core.preprocess.options import PreprocessOptions

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


def read_encoded(source: Source, options: PreprocessOptions | None = None) -> bytes:
    """The encoded bytes of a path / URL / bytes / file-object input.

    A path must name a regular file (a FIFO, a device such as /dev/zero, a socket is refused by
    name, before anything is read from it); a file, file object or download over
    ``options.max_file_bytes`` is refused instead of read into memory.

    Raises:
        ImageLoadError: missing, unreadable, special or too large file, failed download, text-mode
            file, unknown input type.
    """
    options = options if options is not None else PreprocessOptions()
    item, name, cap = source.item, source.name, options.max_file_bytes
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if is_url(item):
        if not options.allow_urls:
            raise ImageLoadError(name, "URLs are disabled (allow_urls=False)")
        return download_image(item, options.url_timeout, cap)
    if isinstance(item, (str, os.PathLike)):
        return _read_file(item, name, cap)
    if hasattr(item, "read"):
        try:
            data = item.read(cap + 1)
        except Exception as exc:
            raise ImageLoadError(name, f"cannot read file object ({type(exc).__name__}: {exc})") from None
        if isinstance(data, str):
            raise ImageLoadError(name, "file object is open in text mode; open it with 'rb'")
        _check_size(len(data), name, cap)
        return bytes(data)
    raise ImageLoadError(
        name,
        f"unsupported input type {type(item).__name__} (expected a path, URL, bytes, binary file, "
        "PIL image, numpy array or torch tensor)",
    )


def _read_file(path: str | os.PathLike, name: str, cap: int) -> bytes:
    """A regular file's bytes, at most ``cap``. Opened without blocking (opening a FIFO would wait
    for a writer forever) and checked with fstat on the open file, so what is read is what was checked."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(name, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        size = _regular_file_size(info.st_mode, info.st_size, name, cap)
        with open(fd, "rb", buffering=0, closefd=False) as handle:
            data = handle.read(size + 1)
            if len(data) > size:  # the file grew since fstat: read on, up to one byte over the cap
                data += handle.read(cap - size)
    except OSError as exc:
        raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    _check_size(len(data), name, cap)
    return data


def _regular_file_size(mode: int, size: int, name: str, cap: int) -> int:
    """``size`` when ``mode`` is a regular file's and ``size`` is at most ``cap``; else ImageLoadError."""
    if stat.S_ISDIR(mode):
        raise ImageLoadError(name, "is a directory, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageLoadError(name, f"is {_file_kind(mode)}, not a regular file; refused without reading it")
    _check_size(size, name, cap)
    return size


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _check_size(size: int, name: str, cap: int) -> None:
    if size > cap:
        raise ImageLoadError(
            name, f"larger than max_file_bytes={cap:,} bytes; refused (raise the preprocessor option to accept it)"
        )


def download_image(url: str, timeout: float, cap: int) -> bytes:
    """The body of an http(s) URL, at most ``cap`` bytes; ImageLoadError naming the URL otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": "blip2core"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(cap + 1)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection
        raise ImageLoadError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageLoadError(url, f"download failed (no network?): {reason}") from None
    _check_size(len(data), url, cap)
    return data
