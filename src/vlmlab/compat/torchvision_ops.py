"""Make ``import torchvision`` work on a CPU-only torch.

Why: every torchvision wheel on the package registry is a CUDA build whose ``_C.so`` links
``libtorch_cuda.so``. On the CPU torch that library is missing, ``_C.so`` fails to load (torchvision
tolerates that), and then ``torchvision/_meta_registrations.py`` calls
``torch.library.register_fake("torchvision::nms")`` and ``("torchvision::qnms")`` unguarded, which
raises ``RuntimeError: operator torchvision::nms does not exist``. That one error also breaks
``import pytorch_lightning`` (through torchmetrics) and the Qwen-VL image and video processors.

What: if, and only if, torchvision's own extension cannot load, define the two operator *schemas*
(exactly as torchvision's C++ code declares them) with a CPU kernel that raises a clear error. The
import then succeeds; transforms and models work; the C++ ops (nms, roi_align, decode_jpeg, ...)
raise an error naming this cause. Where ``_C.so`` loads (a CUDA torch) this does nothing.

``vlmlab/__init__.py`` calls :func:`register_torchvision_op_schemas` so that every interpreter the
project starts (train.py, DDP workers, submitit jobs, pytest) has it before torchvision is imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The Library object owns the registrations: they vanish if it is garbage collected, so it is kept
# for the life of the interpreter. It is written once, by the first call, and never changed.
_LIBRARY: list[torch.library.Library] = []


def _operator_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def _torchvision_extension_loads() -> bool:
    """True if torchvision's compiled ``_C`` extension loads into this torch (CUDA torch, or a
    matching CPU build). Loading it registers the real operators."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    candidates = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


def _unavailable(*_args: object, **_kwargs: object) -> torch.Tensor:
    raise RuntimeError(
        "torchvision's C++ operators are unavailable: its _C extension is a CUDA build and this torch "
        "is CPU-only (see vlmlab/compat/torchvision_ops.py). Transforms work; nms/roi_align do not."
    )


def register_torchvision_op_schemas() -> bool:
    """Define ``torchvision::nms`` / ``torchvision::qnms`` when torchvision's extension cannot load.

    Returns True when schemas were defined by this call, False when nothing was needed (the real
    extension loads, the operators exist already, or torchvision is not installed). Idempotent.
    """
    if _LIBRARY or all(_operator_exists(name) for name in _SCHEMAS):
        return False
    if "torchvision" in sys.modules or _torchvision_extension_loads():
        return False
    library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        if not _operator_exists(name):
            library.define(schema)
            library.impl(name, _unavailable, "CPU")
    _LIBRARY.append(library)
    return True
