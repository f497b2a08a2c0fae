"""3D brain-tumour detection (the BraTS recipe): BraTS / MSD Task01 MRI volumes, or pre-rendered
videos, as multi-frame video.

:mod:`.folders` finds BraTS and MSD cases, :mod:`.nifti` reads and checks them, :mod:`.truth` derives
their ground truth from the segmentation, :mod:`.video` reads pre-rendered videos and their
annotations, :mod:`.render` turns a case into the model's video, prompt and answer, :mod:`.sources`
ties the kinds together and validates them, :mod:`.datamodule` serves the splits. The prompt, the
answer format and the target are :mod:`vlmlab.tasks.brats_detection`'s.
"""

from vlmlab.data.brats.datamodule import BratsDataModule
from vlmlab.data.brats.folders import BRATS_MODALITIES, MSD_MODALITIES, find_brats_cases, find_msd_cases
from vlmlab.data.brats.nifti import NiftiCase
from vlmlab.data.brats.render import DEFAULT_FRAMES, BratsRender, fit_render, make_sample
from vlmlab.data.brats.sources import (
    BratsCase,
    BratsSource,
    check_cases,
    detect_kind,
    find_cases,
    read_source,
    validate_file,
)
from vlmlab.data.brats.truth import TumourTruth, tumour_truth
from vlmlab.data.brats.video import VideoCase, find_video_cases, read_annotations

__all__ = [
    "BRATS_MODALITIES",
    "DEFAULT_FRAMES",
    "MSD_MODALITIES",
    "BratsCase",
    "BratsDataModule",
    "BratsRender",
    "BratsSource",
    "NiftiCase",
    "TumourTruth",
    "VideoCase",
    "check_cases",
    "detect_kind",
    "find_brats_cases",
    "find_cases",
    "find_msd_cases",
    "find_video_cases",
    "fit_render",
    "make_sample",
    "read_annotations",
    "read_source",
    "tumour_truth",
    "validate_file",
]
