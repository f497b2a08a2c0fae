"""Image items of a multiple-choice VQA row: cheap reference checks, encoded bytes, decoding.

An item is a ``{"bytes": b"...", "path": ...}`` dict (the ``datasets.Image`` storage: its bytes, or when
they are null the file at its path), raw encoded bytes, a file path or a PIL image. Relative paths are
read from the source's folder (the parquet file's, or the ``save_to_disk`` folder).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = [
    "ByteCount",
    "ImageProblem",
    "encoded_image",
    "image_reference_problem",
    "load_image",
    "verify_image",
]


class ImageProblem(ValueError):
    """One image of a row cannot be read; the message says why (the caller names file, row and field)."""


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p


class ByteCount(int):
    """The length of an item's encoded bytes, standing in for them in cheap checks (see
    :meth:`MCQATable.summaries`); a type of its own so that an int in the data is not taken for one."""


def _size(data: Any) -> int | None:
    """The byte count of encoded bytes or of their stand-in; None for anything else."""
    if isinstance(data, ByteCount):
        return int(data)
    return len(data) if isinstance(data, bytes | bytearray | memoryview) else None


def _encoded(item: Any) -> bytes | None:
    """Encoded image bytes of an item, if it carries them (bytes, or a dict's non-empty ``bytes``)."""
    data = item.get("bytes") if isinstance(item, dict) else item
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > 0:
        return bytes(data)
    return None


def _missing_file(path: str, base_dir: Path | None) -> str | None:
    """Why ``path`` cannot be read, or None; a relative path says where it was looked for (Hugging Face
    ``datasets`` reads it from the working directory, vlmlab from the source's folder)."""
    if _resolve(path, base_dir).is_file():
        return None
    where = "" if Path(path).is_absolute() or base_dir is None else f" (in {base_dir})"
    return f"file not found: {path}{where}"


def image_reference_problem(item: Any, base_dir: Path | None = None) -> str | None:
    """A cheap check (no decoding): the item carries encoded bytes, a PIL image or an existing file.

    Like ``datasets.Image``, a ``{"bytes", "path"}`` item is read from its bytes, else from its path.
    ``bytes`` may be given as a :class:`ByteCount`. Returns the problem, or None.
    """
    if isinstance(item, Image.Image):
        return None
    if isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
        size = _size(data)
        if size:
            return None
        if data is not None and size is None:
            return f"'bytes' is {type(data).__name__}, expected bytes"
        if isinstance(path, str) and path:
            missing = _missing_file(path, base_dir)
            return None if missing is None else f"no bytes and {missing}"
        return "neither image bytes nor a path"
    size = _size(item)
    if size is not None:
        return None if size > 0 else "empty image bytes"
    if isinstance(item, str):
        return _missing_file(item, base_dir)
    return (
        f"expected image bytes, a {{'bytes', 'path'}} dict, a path or a PIL image, got {type(item).__name__}"
    )


def encoded_image(item: Any, base_dir: Path | None = None) -> bytes:
    """The encoded file bytes of an image item (a PIL image is written as PNG). Raises ImageProblem."""
    problem = image_reference_problem(item, base_dir)
    if problem is not None:
        raise ImageProblem(problem)
    if isinstance(item, Image.Image):
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return buffer.getvalue()
    data = _encoded(item)
    if data is not None:
        return data
    path = item.get("path") if isinstance(item, dict) else item
    try:
        return _resolve(path, base_dir).read_bytes()
    except OSError as error:
        raise ImageProblem(f"cannot read {path}: {error.strerror or error}") from error


def verify_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes fully. Raises ImageProblem naming why."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    # PIL reports broken files with many exception types (OSError, SyntaxError, ValueError, ...).
    except Exception as error:
        raise ImageProblem(f"does not decode as an image ({type(error).__name__}: {error})") from error
    return image


def load_image(item: Any, base_dir: Path | None = None) -> Image.Image:
    """An image item decoded to an RGB PIL image. Raises ImageProblem."""
    image = item if isinstance(item, Image.Image) else verify_image(encoded_image(item, base_dir))
    return image if image.mode == "RGB" else image.convert("RGB")
