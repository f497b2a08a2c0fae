"""Shared fixtures. Tests are offline: the hub is off and any non-loopback connection fails."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import vlmlab  # noqa: F401  (first: makes torchvision importable on a CPU-only torch)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.", "::1", "localhost")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test whose code opens a connection beyond this machine (e.g. a hub download)."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and self.family != socket.AF_UNIX and not host.startswith(LOOPBACK):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture(scope="session")
def tiny_processors() -> dict:
    from vlmlab.models.processor import offline_processor

    return {family: offline_processor(family, 784, 3136) for family in ("qwen2_5_vl", "qwen3_vl")}


@pytest.fixture(scope="session")
def tiny_vision(tiny_processors) -> dict:
    """The tiny models' vision geometry per family (what vlmlab.run.build passes to datamodules)."""
    from vlmlab.models.facts import VisionGeometry

    return {family: VisionGeometry.from_processor(family, p) for family, p in tiny_processors.items()}
