"""Learning-rate schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from vlmlab.modules.optim import OptimSettings, configure_adamw, warmup_cosine


def test_warmup_is_linear_then_cosine_to_min() -> None:
    # 4 warm-up steps of 10: 1/4, 2/4, 3/4, 4/4; then cos decay over 6 steps.
    assert [warmup_cosine(s, 4, 10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(7, 4, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))  # 0.5
    assert warmup_cosine(10, 4, 10) == pytest.approx(0.0)
    assert warmup_cosine(10, 4, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 10) == pytest.approx(1.0)


def test_weight_decay_only_on_matrices_and_only_trainable() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    model[2].weight.requires_grad_(False)
    config = configure_adamw(model, OptimSettings(lr=0.1, weight_decay=0.5, warmup_ratio=0.2), total_steps=10)
    decayed, plain = config["optimizer"].param_groups
    assert decayed["weight_decay"] == 0.5 and [p.shape for p in decayed["params"]] == [torch.Size([3, 3])]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 4  # two biases, norm weight and bias
    assert config["lr_scheduler"]["interval"] == "step"


def test_no_trainable_parameters_is_an_error() -> None:
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        configure_adamw(model, OptimSettings(), total_steps=1)
