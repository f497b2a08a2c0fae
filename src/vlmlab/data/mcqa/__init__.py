"""Medical multiple-choice VQA data (the MCQA recipe): rows of images, a question and lettered options.

:mod:`.table` finds a split's sources and reads them as Arrow tables, :mod:`.images` reads image
items, :mod:`.rows` checks rows and decodes them into samples, :mod:`.datamodule` serves the splits.
The prompt, the answer format and the target are :mod:`vlmlab.tasks.mcqa`'s.
"""

from vlmlab.data.mcqa.datamodule import MCQADataModule
from vlmlab.data.mcqa.images import (
    ImageProblem,
    encoded_image,
    image_reference_problem,
    load_image,
    verify_image,
)
from vlmlab.data.mcqa.rows import (
    REQUIRED_FIELDS,
    MCQARow,
    check_fields,
    check_file,
    check_images,
    check_row,
    read_rows,
    to_sample,
    validate_file,
)
from vlmlab.data.mcqa.table import (
    MCQATable,
    base_dir_of,
    find_sources,
    is_hf_dataset_dir,
    read_source,
    trainset_features,
)

__all__ = [
    "REQUIRED_FIELDS",
    "ImageProblem",
    "MCQADataModule",
    "MCQARow",
    "MCQATable",
    "base_dir_of",
    "check_fields",
    "check_file",
    "check_images",
    "check_row",
    "encoded_image",
    "find_sources",
    "image_reference_problem",
    "is_hf_dataset_dir",
    "load_image",
    "read_rows",
    "read_source",
    "to_sample",
    "trainset_features",
    "validate_file",
    "verify_image",
]
