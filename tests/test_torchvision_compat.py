"""The CPU-torch torchvision workaround: imports work, ops fail clearly, nothing happens where _C loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_plain_import_fails_without_the_workaround() -> None:
    # Documents the problem the workaround solves (on this CPU-only torch with a CUDA torchvision wheel).
    result = run_python("import torchvision")
    if result.returncode == 0:
        pytest.skip("torchvision's own extension loads here: the workaround is not needed")
    assert "torchvision::nms does not exist" in result.stderr


def test_vlmlab_first_makes_torchvision_lightning_and_processors_importable() -> None:
    result = run_python(
        """
        import vlmlab, torchvision, pytorch_lightning, torchmetrics
        from transformers import Qwen2VLVideoProcessor
        Qwen2VLVideoProcessor()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_registered_operator_raises_a_clear_error() -> None:
    import torchvision  # noqa: F401  (vlmlab was imported by conftest)

    from vlmlab.compat import torchvision_ops

    if not torchvision_ops._LIBRARY:
        pytest.skip("torchvision's own extension loads here")
    with pytest.raises(RuntimeError, match="CPU-only"):
        torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    assert torchvision_ops.register_torchvision_op_schemas() is False  # idempotent


def test_does_nothing_where_the_extension_loads() -> None:
    result = run_python(
        """
        import importlib.util
        # Load the module without running vlmlab/__init__ (which would register at once).
        spec = importlib.util.spec_from_file_location(
            "tv_ops", importlib.util.find_spec("vlmlab").submodule_search_locations[0] + "/compat/torchvision_ops.py")
        module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
        module._torchvision_extension_loads = lambda: True   # as on a CUDA torch
        print(module.register_torchvision_op_schemas(), module._operator_exists("nms"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
