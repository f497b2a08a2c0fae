"""Image items of a multiple-choice VQA row: cheap reference checks, encoded bytes, decoding.

An item is a ``{"bytes": b"...", "path": ...}`` dict (the ``datasets.Image`` storage), raw encoded
bytes, a file path (relative to the source's folder, or absolute) or a PIL image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["ImageProblem", "encoded_image", "image_reference_problem", "load_image", "verify_image"]


class ImageProblem(ValueError):
    """One image of a row cannot be read; the message says why (the caller names file, row and field)."""


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _encoded(item: Any) -> bytes | None:
    """Encoded image bytes of an item, if it carries them (bytes, or a dict's non-empty ``bytes``)."""
    data = item.get("bytes") if isinstance(item, dict) else item
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > 0:
        return bytes(data)
    return None


def image_reference_problem(item: Any, base_dir: Path | None = None) -> str | None:
    """A cheap check (no decoding): the item carries encoded bytes, a PIL image or an existing file.

    ``bytes`` may also be given as its length (an int), as :meth:`MCQATable.summaries` does to avoid
    copying image data. Returns the problem, or None.
    """
    if isinstance(item, Image.Image):
        return None
    if isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
        if (isinstance(data, int) and data > 0) or _encoded(item) is not None:
            return None
        if data is not None and not isinstance(data, bytes | bytearray | memoryview | int):
            return f"'bytes' is {type(data).__name__}, expected bytes"
        if isinstance(path, str) and path:
            return None if _resolve(path, base_dir).is_file() else f"no bytes and file not found: {path}"
        return "neither image bytes nor a path"
    if isinstance(item, bytes | bytearray | memoryview | int):
        return None if (item if isinstance(item, int) else len(item)) > 0 else "empty image bytes"
    if isinstance(item, str):
        return None if _resolve(item, base_dir).is_file() else f"file not found: {item}"
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
    return _resolve(path, base_dir).read_bytes()


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
