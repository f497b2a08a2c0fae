"""Synthetic multiple-choice VQA: coloured lesions whose colour, place or presence is the answer.

``python -m vlmlab.tools.synth mcqa OUT_DIR`` calls :func:`write`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlmlab.data.mcqa import trainset_features
from vlmlab.tasks.mcqa import OPTION_LETTERS

__all__ = ["COLOURS", "QUADRANTS", "write"]

# Saturated colours far apart in RGB, so that a tiny model can tell them apart after resizing.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
}
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
WHICH_IMAGE = ("the first image", "the second image", "neither image")
_BACKGROUND_MEAN, _BACKGROUND_STD = 40.0, 6.0  # dark, noisy tissue: every channel below ~70
_MIN_SIZE = 32


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [H, W, 3] grey noise."""
    noise = rng.normal(_BACKGROUND_MEAN, _BACKGROUND_STD, size=(size, size, 1))
    return np.clip(np.repeat(noise, 3, axis=2), 0, 255).astype(np.uint8)


def _blob(pixels: np.ndarray, y: int, x: int, r: int, colour: tuple[int, int, int]) -> None:
    yy, xx = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    pixels[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = colour


def _lettered(rng: np.random.Generator, choices: list[str], shuffle: bool) -> dict[str, str | None]:
    """Options A..E: the choices (shuffled if asked) in the first letters, None for the rest."""
    order = list(rng.permutation(choices)) if shuffle else list(choices)
    return {letter: (str(order[i]) if i < len(order) else None) for i, letter in enumerate(OPTION_LETTERS)}


def _label(options: dict[str, str | None], answer: str) -> str:
    return next(letter for letter, text in options.items() if text == answer)


def _colour_row(rng: np.random.Generator, size: int, shuffle: bool) -> dict[str, Any]:
    """One image, one lesion anywhere; five colour options (A..E), in :data:`COLOURS` order unless
    ``shuffle``."""
    colour = str(rng.choice(list(COLOURS)))
    r = size // 6
    y, x = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    pixels = _canvas(rng, size)
    _blob(pixels, y, x, r, COLOURS[colour])
    options = _lettered(rng, list(COLOURS), shuffle=shuffle)
    return {
        "images": [pixels],
        "question": "What colour is the lesion in this image?",
        "options": options,
        "answer": colour,
        "reasoning": f"The image shows one round {colour} lesion on a dark background, so the lesion is {colour}.",
    }


def _quadrant_row(rng: np.random.Generator, size: int, shuffle: bool) -> dict[str, Any]:
    """One image, one lesion inside one quadrant; four quadrant options (A..D, E absent), in
    :data:`QUADRANTS` order unless ``shuffle``."""
    quadrant = str(rng.choice(QUADRANTS))
    r, half = size // 8, size // 2
    # The whole disc stays inside its quadrant, one clear pixel from the midlines.
    lo, hi = r + 1, half - r - 2
    y, x = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    if quadrant.startswith("lower"):
        y += half
    if quadrant.endswith("right"):
        x += half
    pixels = _canvas(rng, size)
    _blob(pixels, y, x, r, COLOURS[str(rng.choice(list(COLOURS)))])
    vertical, horizontal = quadrant.split()
    return {
        "images": [pixels],
        "question": "In which quadrant of the image is the lesion?",
        "options": _lettered(rng, list(QUADRANTS), shuffle=shuffle),
        "answer": quadrant,
        "reasoning": f"The lesion lies in the {vertical} half and the {horizontal} half of the image, "
        f"so it is in the {quadrant} quadrant.",
    }


def _which_image_row(rng: np.random.Generator, size: int, shuffle: bool) -> dict[str, Any]:
    """Two images, a lesion in exactly one; fixed options A..C (D, E absent) whatever ``shuffle``."""
    first = bool(rng.random() < 0.5)
    colour = str(rng.choice(list(COLOURS)))
    images = [_canvas(rng, size), _canvas(rng, size)]
    r = size // 6
    y, x = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    _blob(images[0 if first else 1], y, x, r, COLOURS[colour])
    answer = WHICH_IMAGE[0] if first else WHICH_IMAGE[1]
    shown, empty = ("first", "second") if first else ("second", "first")
    return {
        "images": images,
        "question": "Which of the two images shows a lesion?",
        "options": _lettered(rng, list(WHICH_IMAGE), shuffle=False),
        "answer": answer,
        "reasoning": f"The {shown} image shows a {colour} lesion and the {empty} image shows none.",
    }


# dataset_name -> row maker: three "source benchmarks" for per-dataset accuracy.
_KINDS = {"synth_colour": _colour_row, "synth_quadrant": _quadrant_row, "synth_which_image": _which_image_row}


def write(
    out_dir: Path,
    num_train: int = 64,
    num_val: int = 16,
    num_test: int = 16,
    size: int = 64,
    seed: int = 0,
    shuffle_options: bool = True,
    reasoning_fraction: float = 0.5,
    kinds: Sequence[str] = tuple(_KINDS),
) -> dict[str, Path]:
    """Write a synthetic multiple-choice VQA set in the recipe's trainset format; return the split files.

    Layout: ``out_dir/{train,val,test}.parquet``, rows ``{images: [{"bytes": png, "path": None}],
    question, options {A..E}, answer_label, answer, reasoning, dataset_name, dataset_index}`` with
    ``datasets`` feature metadata (images load as PIL). Images are ``size`` x ``size`` dark noise with
    round lesions in five saturated colours. Three dataset_names, drawn at random per row:
    ``synth_colour`` (the lesion's colour; 5 options), ``synth_quadrant`` (its quadrant; 4 options,
    E absent) and ``synth_which_image`` (two images, which one has a lesion; 3 options, fixed order).
    shuffle_options: shuffle the colour and quadrant options per row, so that the letter depends on the
    option texts as well as the pixels; without it each letter is one colour or quadrant, which a
    tiny model can learn from the pixels alone. reasoning_fraction: the chance that a row carries a
    reasoning that states what the pixels show (the others have none). kinds: the dataset_names to draw
    from (all three by default; one kind asks a single question, which a tiny model learns in minutes).
    dataset_index counts rows per dataset_name across the splits. Deterministic for a seed.
    """
    if size < _MIN_SIZE:
        raise ValueError(f"need size >= {_MIN_SIZE}, got {size}")
    if not 0.0 <= reasoning_fraction <= 1.0:
        raise ValueError(f"reasoning_fraction={reasoning_fraction}; expected a number in [0, 1]")
    if min(num_train, num_val, num_test) < 0:
        raise ValueError("split sizes must be >= 0")
    kinds = list(kinds)
    if not kinds or any(kind not in _KINDS for kind in kinds):
        raise ValueError(f"kinds={kinds}; expected a non-empty list of {list(_KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    schema = trainset_features().arrow_schema
    counters = dict.fromkeys(kinds, 0)
    paths: dict[str, Path] = {}
    for split, count in {"train": num_train, "val": num_val, "test": num_test}.items():
        rows = []
        for _ in range(count):
            name = str(rng.choice(kinds))
            drawn = _KINDS[name](rng, size, shuffle_options)
            with_reasoning = bool(rng.random() < reasoning_fraction)
            rows.append(
                {
                    "images": [{"bytes": _png(pixels), "path": None} for pixels in drawn["images"]],
                    "question": drawn["question"],
                    "options": drawn["options"],
                    "answer_label": _label(drawn["options"], drawn["answer"]),
                    "answer": drawn["answer"],
                    "reasoning": drawn["reasoning"] if with_reasoning else None,
                    "dataset_name": name,
                    "dataset_index": counters[name],
                }
            )
            counters[name] += 1
        paths[split] = out_dir / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths[split])
    return paths
