"""3D report generation data: a JSON list of rows, each a conversation about one or more volumes.

:mod:`.rows` reads and checks a file and decodes its rows; :mod:`.datamodule` serves the splits.
"""

from vlmlab.data.ct_report.datamodule import CTReportDataModule
from vlmlab.data.ct_report.rows import check_file, read_rows, validate_file

__all__ = ["CTReportDataModule", "check_file", "read_rows", "validate_file"]
