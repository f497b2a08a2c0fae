"""Medical multiple-choice VQA (seed 004).

Rows come from parquet files (one file, a glob such as ``train-*.parquet``, or a folder searched
recursively) or from a Hugging Face ``datasets`` folder written by ``save_to_disk`` (e.g. by
``python -m vlmlab.tools.convert hf``). Each row is the seed's trainset format::

    images         list of images: {"bytes": b"...", "path": ...} dicts (the ``datasets.Image``
                   storage), raw encoded bytes, file paths (relative to the parquet file's folder),
                   or PIL images
    question       str
    options        {"A": str, ..., "E": str}; a missing, None or blank option is not shown. A JSON
                   string of that dict is accepted too (the seed's ``prep_to_hf_bytes.py`` writes one)
    answer_label   the correct letter, one of the options shown
    answer         str, the full answer text (kept in metadata)
    reasoning      optional str, a chain of thought
    dataset_name   str, the source benchmark (kept in ``target`` for per-dataset accuracy)
    dataset_index  int, the row's identifier within its source

Prompt (user turn): the images, then one text item :func:`format_prompt`: the question, one
``"X. option"`` line per option, and :data:`ANSWER_FORMAT_INSTRUCTION`. The SFT answer
(:func:`format_answer`) is ``<think>{reasoning}</think><answer>{label}</answer>`` when the row has a
reasoning and just ``<answer>{label}</answer>`` when it has none: the instruction always asks for
the thinking, but a target without one teaches the letter alone rather than invented reasoning.
The GRPO reward compares the letter inside ``<answer>`` with ``target["answer_label"]``.
"""

from __future__ import annotations

import glob
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from torch.utils.data import Dataset

from vlmlab.data.base import OnBadSample, VisionLanguageDataModule, keep_good_rows
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sample import Sample

log = logging.getLogger(__name__)

OPTION_LETTERS = ("A", "B", "C", "D", "E")
REQUIRED_FIELDS = ("images", "question", "options", "answer_label", "answer", "dataset_name", "dataset_index")
ANSWER_FORMAT_INSTRUCTION = (
    "Answer with the letter of the correct option. First think step by step inside <think> </think> tags, "
    "then write only the letter inside <answer> </answer> tags, e.g. <think>...</think><answer>A</answer>."
)
# A folder written by ``datasets.Dataset.save_to_disk`` holds these two files beside its .arrow shards.
HF_DATASET_FILES = ("state.json", "dataset_info.json")
_GLOB_CHARS = set("*?[")


class ImageProblem(ValueError):
    """One image of a row cannot be read; the message says why (the caller names file, row and field)."""


# ----------------------------------------------------------------------------------------- text


def parse_options(value: Any) -> dict[str, str | None]:
    """The options of a row as a dict; a JSON string of a dict is decoded. Raises ValueError."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a dict and not a JSON object string ({error.msg})") from error
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict {{A..E: str}}, got {type(value).__name__}")
    # An Arrow struct carries every key seen in the file, so an unknown key is only an error if it is set.
    unknown = sorted(str(k) for k, v in value.items() if k not in OPTION_LETTERS and v not in (None, ""))
    if unknown:
        raise ValueError(f"unknown option letter(s) {', '.join(unknown)}; expected A..E")
    for letter, text in value.items():
        if text is not None and not isinstance(text, str):
            raise ValueError(f"option {letter} is {type(text).__name__}, expected a string or None")
    return value


def present_options(options: dict[str, str | None]) -> dict[str, str]:
    """The options to show, in letter order: missing, None and blank ones are skipped."""
    return {
        k: options[k].strip()
        for k in OPTION_LETTERS
        if isinstance(options.get(k), str) and options[k].strip()
    }


def format_prompt(question: str, options: dict[str, str | None]) -> str:
    """The text of the user turn: question, one ``"A. text"`` line per shown option, the instruction.

    e.g. ``"What colour is the lesion?\\nA. red\\nB. blue\\n" + ANSWER_FORMAT_INSTRUCTION``.
    """
    lines = [question.strip(), *(f"{k}. {v}" for k, v in present_options(options).items())]
    return "\n".join([*lines, ANSWER_FORMAT_INSTRUCTION])


def format_answer(answer_label: str, reasoning: str | None = None) -> str:
    """The SFT target: ``<think>R</think><answer>X</answer>``, or ``<answer>X</answer>`` without reasoning."""
    answer = f"<answer>{answer_label}</answer>"
    if reasoning is not None and reasoning.strip():
        return f"<think>{reasoning.strip()}</think>{answer}"
    return answer


# --------------------------------------------------------------------------------------- images


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


# ----------------------------------------------------------------------------------------- rows


def check_fields(row: Any, index: int | str, path: Path | str) -> list[DataProblem]:
    """Every problem of a row's non-image fields (required keys, types, answer_label among the options)."""
    problems: list[DataProblem] = []

    def bad(field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), index, field, problem))

    if not isinstance(row, dict):
        bad("row", f"expected a record, got {type(row).__name__}")
        return problems
    for key in REQUIRED_FIELDS:
        if key != "images" and row.get(key) is None:
            bad(key, "missing")
    question = row.get("question")
    if question is not None and (not isinstance(question, str) or not question.strip()):
        bad("question", "expected a non-empty string")
    for key in ("answer", "dataset_name"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            bad(key, f"expected a string, got {type(value).__name__}")
    if isinstance(row.get("dataset_name"), str) and not row["dataset_name"].strip():
        bad("dataset_name", "expected a non-empty string")
    reasoning = row.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        bad("reasoning", f"expected a string or null, got {type(reasoning).__name__}")
    index_value = row.get("dataset_index")
    if index_value is not None and (isinstance(index_value, bool) or not isinstance(index_value, int)):
        bad("dataset_index", f"expected an integer, got {type(index_value).__name__} {index_value!r}")
    shown: dict[str, str] = {}
    if row.get("options") is not None:
        try:
            shown = present_options(parse_options(row["options"]))
        except ValueError as error:
            bad("options", str(error))
        else:
            if len(shown) < 2:
                bad("options", f"expected at least 2 options, got {len(shown)}")
    label = row.get("answer_label")
    if label is not None:
        if not isinstance(label, str):
            bad("answer_label", f"expected a letter, got {type(label).__name__}")
        elif shown and label not in shown:
            bad("answer_label", f"{label!r} is not one of the options {', '.join(shown)}")
    return problems


def check_images(
    images: Any, index: int | str, path: Path | str, decode: bool, base_dir: Path | None = None
) -> list[DataProblem]:
    """Problems of a row's ``images``: a non-empty list whose every item is readable (decoded if asked)."""
    if not isinstance(images, list):
        got = "nothing" if images is None else type(images).__name__
        return [DataProblem(str(path), index, "images", f"expected a list of images, got {got}")]
    if not images:
        return [DataProblem(str(path), index, "images", "no image (an empty list)")]
    problems = []
    for k, item in enumerate(images):
        try:
            if decode:
                load_image(item, base_dir)
            else:
                problem = image_reference_problem(item, base_dir)
                if problem is not None:
                    raise ImageProblem(problem)
        except ImageProblem as error:
            problems.append(DataProblem(str(path), index, f"images[{k}]", str(error)))
    return problems


def check_row(
    row: Any, index: int | str, path: Path | str, decode: bool = False, base_dir: Path | None = None
) -> list[DataProblem]:
    """Every problem of one row of the seed-004 format.

    decode: decode every image (all must decode) rather than checking that each one carries bytes or
    names an existing file. base_dir: the folder relative image paths are read from.
    """
    problems = check_fields(row, index, path)
    if isinstance(row, dict):
        problems += check_images(row.get("images"), index, path, decode, base_dir)
    return problems


def sample_id(row: dict[str, Any]) -> str:
    return f"{row['dataset_name']}-{row['dataset_index']}"


def to_sample(
    row: dict[str, Any], index: int, path: Path, max_images: int | None = None, base_dir: Path | None = None
) -> Sample:
    """A checked row to the sample contract; images are decoded here (a broken one raises DataError)."""
    images = row["images"] if max_images is None else row["images"][:max_images]
    content: list[dict[str, Any]] = []
    for k, item in enumerate(images):
        try:
            content.append({"type": "image", "image": load_image(item, base_dir)})
        except ImageProblem as error:
            raise DataError.one(path, index, f"images[{k}]", str(error)) from error
    options = present_options(parse_options(row["options"]))
    content.append({"type": "text", "text": format_prompt(row["question"], options)})
    reasoning = row.get("reasoning")
    return Sample(
        id=sample_id(row),
        messages=[{"role": "user", "content": content}],
        target={
            "answer_label": row["answer_label"],
            "options": options,
            "dataset_name": row["dataset_name"],
            "dataset_index": row["dataset_index"],
        },
        answer=format_answer(row["answer_label"], reasoning),
        metadata={
            "source": str(path),
            "row": index,
            "answer": row["answer"],
            "has_reasoning": bool(reasoning and reasoning.strip()),
            "num_images": len(row["images"]),
            "num_images_used": len(images),
        },
    )


# -------------------------------------------------------------------------------------- sources


def trainset_features() -> Any:
    """``datasets.Features`` of the seed's trainset format as vlmlab writes it.

    Images are ``List(Image())`` (stored as ``{"bytes", "path"}`` structs, decoded to PIL by
    ``datasets``); options are a struct with one nullable string per letter A..E.
    """
    import datasets  # heavy; only the writers need it

    string = datasets.Value("string")
    return datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "question": string,
            "options": {letter: string for letter in OPTION_LETTERS},
            "answer_label": string,
            "answer": string,
            "reasoning": string,
            "dataset_name": string,
            "dataset_index": datasets.Value("int64"),
        }
    )


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in HF_DATASET_FILES)


def find_sources(spec: str | Path) -> list[Path]:
    """The parquet files and ``save_to_disk`` folders that ``spec`` names, sorted; [] if none.

    spec: a parquet file, a ``save_to_disk`` folder, a folder of parquet files (searched
    recursively), or a glob of any of these.
    """
    text = str(spec)
    candidates = [Path(p) for p in sorted(glob.glob(text))] if _GLOB_CHARS & set(text) else [Path(text)]
    found: list[Path] = []
    for path in candidates:
        if is_hf_dataset_dir(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob("*.parquet"))
        elif path.is_file():
            found.append(path)
    return list(dict.fromkeys(found))


def read_source(path: Path, keep_in_memory: bool = False) -> pa.Table:
    """One source as an Arrow table (a parquet file, or a ``save_to_disk`` folder memory-mapped).

    Images stay encoded (``{"bytes", "path"}`` structs): nothing is decoded here.
    """
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise DataError.one(
                path, "-", "file", f"a DatasetDict; point at one split folder: {', '.join(splits)}"
            )
        if not is_hf_dataset_dir(path):
            raise DataError.one(path, "-", "file", "not a parquet file nor a datasets.save_to_disk folder")
        import datasets  # heavy; only needed for saved datasets

        try:
            dataset = datasets.load_from_disk(str(path), keep_in_memory=keep_in_memory)
        except (OSError, ValueError) as error:
            raise DataError.one(path, "-", "file", f"cannot load the saved dataset: {error}") from error
        return dataset.with_format("arrow")[:]
    try:
        return pq.read_table(path, memory_map=not keep_in_memory)
    except (OSError, pa.ArrowException) as error:
        raise DataError.one(path, "-", "file", f"not a readable parquet file: {error}") from error


def base_dir_of(source: Path) -> Path:
    """The folder relative image paths of a source are read from."""
    return source if source.is_dir() else source.parent


def _image_stubs(column: pa.ChunkedArray) -> list[Any]:
    """Per row, the ``images`` value with every encoded image replaced by its byte count (no copies).

    list<struct<bytes, path>> -> [{"bytes": n | None, "path": str | None}, ...]; list<binary> -> [n, ...];
    anything else (paths, wrong types) as Python values.
    """
    stubs: list[Any] = []
    for chunk in column.chunks:
        if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)):
            stubs += chunk.to_pylist()
            continue
        values = chunk.flatten()  # the items of the non-null lists, in order
        item_type = chunk.type.value_type
        if pa.types.is_struct(item_type) and item_type.get_field_index("bytes") >= 0:
            nbytes = pc.binary_length(pc.struct_field(values, "bytes")).to_pylist()
            has_path = item_type.get_field_index("path") >= 0
            paths = pc.struct_field(values, "path").to_pylist() if has_path else [None] * len(values)
            valid = values.is_valid().to_pylist()
            items = [
                {"bytes": n, "path": p} if ok else None for n, p, ok in zip(nbytes, paths, valid, strict=True)
            ]
        elif pa.types.is_binary(item_type) or pa.types.is_large_binary(item_type):
            items = pc.binary_length(values).to_pylist()
        else:
            items = values.to_pylist()
        lengths = pc.list_value_length(chunk).to_pylist()
        start = 0
        for length in lengths:
            if length is None:
                stubs.append(None)
            else:
                stubs.append(items[start : start + length])
                start += length
    return stubs


class MCQATable:
    """The rows of every source a spec names, read lazily from Arrow tables.

    Errors name the source (parquet file or saved-dataset folder) and the row index within it.
    """

    def __init__(self, spec: str | Path, keep_in_memory: bool = False):
        self.spec = str(spec)
        paths = find_sources(spec)
        if not paths:
            raise DataError.one(spec, "-", "file", "no parquet file or datasets.save_to_disk folder found")
        self.sources: list[tuple[Path, pa.Table]] = [(p, read_source(p, keep_in_memory)) for p in paths]

    def __len__(self) -> int:
        return sum(table.num_rows for _, table in self.sources)

    def row(self, source: int, index: int) -> dict[str, Any]:
        """Row ``index`` of source ``source`` as a Python dict (image bytes included)."""
        return self.sources[source][1].slice(index, 1).to_pylist()[0]

    def summaries(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(source, row, record) for every row, with image bytes replaced by their length (cheap)."""
        for s, (_, table) in enumerate(self.sources):
            stubs = _image_stubs(table.column("images")) if "images" in table.column_names else None
            light = table.drop_columns(["images"]) if stubs is not None else table
            for i, record in enumerate(light.to_pylist()):
                if stubs is not None:
                    record["images"] = stubs[i]
                yield s, i, record

    def rows(self, batch_size: int = 64) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(source, row, record) for every row with its images, a few rows in memory at a time."""
        for s, (_, table) in enumerate(self.sources):
            i = 0
            for batch in table.to_batches(max_chunksize=batch_size):
                for record in batch.to_pylist():
                    yield s, i, record
                    i += 1


def validate_file(path: str | Path, decode: bool = True) -> list[DataProblem]:
    """Every problem of a seed-004 dataset (``python -m vlmlab.tools.validate mcqa PATH``).

    path: a parquet file, a glob, a folder of parquet files or a ``save_to_disk`` folder.
    decode: decode every image; otherwise only check that each carries bytes or names a file.
    """
    try:
        table = MCQATable(path)
    except DataError as error:
        return error.problems
    rows = table.rows() if decode else table.summaries()
    problems = []
    for s, i, record in rows:
        source = table.sources[s][0]
        problems += check_row(record, i, source, decode=decode, base_dir=base_dir_of(source))
    return problems


class MCQADataset(Dataset):
    """Rows of one split, checked at construction (fields, image references), images decoded lazily.

    max_images: use only the first K images of a row (the seed's ``--keep_first_k_images``).
    """

    def __init__(self, path: str | Path, max_images: int | None = None, on_bad_sample: OnBadSample = "raise"):
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images={max_images}; expected >= 1 or None")
        self.path = Path(path)
        self.max_images = max_images
        self.table = MCQATable(path)
        problems: dict[int, list[DataProblem]] = {s: [] for s in range(len(self.table.sources))}
        counts = {s: table.num_rows for s, (_, table) in enumerate(self.table.sources)}
        for s, i, record in self.table.summaries():
            source = self.table.sources[s][0]
            problems[s] += check_row(record, i, source, base_dir=base_dir_of(source))
        every = [p for found in problems.values() for p in found]
        if every and on_bad_sample == "raise":
            raise DataError(every)
        # (source, row) of every kept row; skipped rows are logged per source by keep_good_rows.
        self.index: list[tuple[int, int]] = []
        for s, count in counts.items():
            kept = keep_good_rows(list(range(count)), problems[s], on_bad_sample, self.table.sources[s][0])
            self.index += [(s, i) for i in kept]
        self.skipped = len(self.table) - len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def sample_costs(self) -> list[float]:
        """Batching cost of each sample: the number of images it shows. The processor bounds every
        image by ``max_pixels``, so each costs at most the same number of vision tokens."""
        counts = {(source, index): len(record["images"] or []) for source, index, record in self.table.summaries()}
        return [float(min(counts[key], self.max_images or counts[key])) for key in self.index]

    def __getitem__(self, i: int) -> Sample:
        s, row = self.index[i]
        source = self.table.sources[s][0]
        return to_sample(self.table.row(s, row), row, source, self.max_images, base_dir_of(source))


class MCQADataModule(VisionLanguageDataModule):
    """Multiple-choice VQA; split files are parquet files, globs, folders or ``save_to_disk`` folders.

    max_images: keep the first K images of each row (None: all).
    synth_rows: training rows of the synthetic set written for ``preset=tiny``.
    """

    def __init__(
        self,
        max_images: int | None = None,
        synth_rows: int = 64,
        train_file: str | None = "train.parquet",
        val_file: str | None = "val.parquet",
        test_file: str | None = "test.parquet",
        **kwargs: Any,
    ):
        super().__init__(train_file=train_file, val_file=val_file, test_file=test_file, **kwargs)
        self.max_images = max_images
        self.synth_rows = synth_rows

    def has_data(self) -> bool:
        # Split files may be globs or folders: "present" means that something matches.
        train = self.split_path("train")
        return train is None or bool(find_sources(train))

    def build_dataset(self, path: Path) -> MCQADataset:
        return MCQADataset(path, self.max_images, self.on_bad_sample)

    def write_synthetic(self, root: Path) -> None:
        from vlmlab.data.synthetic.mcqa import write

        write(root, num_train=self.synth_rows)
