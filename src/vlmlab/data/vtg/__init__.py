"""Video temporal grounding data: find when a sentence happens in a video.

:mod:`.rows` reads and checks a JSONL file, :mod:`.samples` decodes a row's clip into a sample,
:mod:`.datamodule` serves the splits. The prompt, the answer format and the target are the task's
(:mod:`vlmlab.tasks.grounding`).
"""

from vlmlab.data.vtg.datamodule import VTGDataModule
from vlmlab.data.vtg.rows import VTGRow, check_file, check_row, read_rows, sample_ids, validate_file
from vlmlab.data.vtg.samples import to_sample

__all__ = [
    "VTGDataModule",
    "VTGRow",
    "check_file",
    "check_row",
    "read_rows",
    "sample_ids",
    "to_sample",
    "validate_file",
]
