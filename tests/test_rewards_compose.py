"""Reward composition (vlmlab.rewards.compose), the TRL adapters, and the conf/reward configs."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import compose_config
from vlmlab.rewards import brats_3d, mcqa, temporal
from vlmlab.rewards.compose import Reward, RewardTerm, as_trl_reward_funcs, completion_text, merge_weights

VTG_TARGET = {
    "timestamp": [2.0, 6.0],
    "duration": 10.0,
    "relative": False,
    "num_bins": 100,
    "temporal_tokens": False,
}
MCQA_TARGET = {"answer_label": "B", "options": {"A": "red", "B": "blue"}}
BRATS_TARGET = {"bbox_3d": [10, 20, 3, 40, 50, 9], "peak_slice": 5, "tumor_ratio": 0.25}
BRATS_PERFECT = (
    "<think>This video shows a tumour.</think>"
    '<answer>{"bbox_3d": [10, 20, 3, 40, 50, 9], "peak_slice": 5, "tumor_ratio": 0.25}</answer>'
)


def test_merge_weights() -> None:
    defaults = {"a": 1.0, "b": 0.5}
    assert merge_weights(defaults, None) == defaults
    assert merge_weights(defaults, {"b": 2}) == {"a": 1.0, "b": 2.0}
    for bad in ({"c": 1.0}, {"a": -0.1}, {"a": float("inf")}, {"a": True}, [("a", 1.0)]):
        with pytest.raises(ValueError):
            merge_weights(defaults, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "conv"}], "conv"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "a"),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
                }
            ],
            "xy",
        ),
        ([{"content": "no role"}], "no role"),
        ({"role": "assistant", "content": "one message"}, "one message"),
        ([], ""),
        (None, ""),
        (42, ""),
        ([{"role": "assistant", "content": None}], ""),
    ],
)
def test_completion_text(completion: object, text: str) -> None:
    assert completion_text(completion) == text


def test_single_term_keeps_component_names() -> None:
    reward = Reward([RewardTerm(partial(temporal.score, overlap_mode="recall"))])
    assert reward.component_names() == ["temporal_iou", "segment_overlap", "format"]
    assert reward.max_total == 2.0
    rows = reward(["<answer>0.0 to 4.0</answer>", "nothing"], [VTG_TARGET, VTG_TARGET])
    assert rows[0] == pytest.approx(
        {"temporal_iou": 1 / 3, "segment_overlap": 0.25, "format": 0.5, "total": 13 / 12}
    )
    assert rows[1] == {"temporal_iou": 0.0, "segment_overlap": 0.0, "format": 0.0, "total": 0.0}


def test_several_terms_are_prefixed_and_summed() -> None:
    reward = Reward({"vtg": RewardTerm(temporal.score), "qa": RewardTerm(mcqa.score, {"format": 1.0})})
    assert reward.component_names() == [
        "vtg/temporal_iou",
        "vtg/segment_overlap",
        "vtg/format",
        "qa/accuracy",
        "qa/format",
    ]
    assert reward.max_total == 2.0 + 2.0
    [row] = reward(["<answer>2 to 6</answer>"], [{**VTG_TARGET, "answer_label": "B"}])
    assert row == {
        "vtg/temporal_iou": 1.0,
        "vtg/segment_overlap": 0.5,
        "vtg/format": 0.5,
        "qa/accuracy": 0.0,
        "qa/format": 0.0,
        "total": 2.0,
    }


def test_list_terms_take_the_family_name_or_their_prefix() -> None:
    reward = Reward([RewardTerm(mcqa.score), RewardTerm(brats_3d.score, prefix="tumour")])
    assert reward.component_names()[:3] == ["mcqa/accuracy", "mcqa/format", "tumour/think_format"]
    assert reward.max_total == 1.5 + 8.5
    with pytest.raises(ValueError, match="unique"):
        Reward([RewardTerm(mcqa.score), RewardTerm(mcqa.score)])  # both "mcqa/..."
    assert (
        len(
            Reward([RewardTerm(mcqa.score, prefix="a"), RewardTerm(mcqa.score, prefix="b")]).component_names()
        )
        == 4
    )


def test_term_weights_change_the_max_and_are_checked_at_construction() -> None:
    assert RewardTerm(brats_3d.score, {"iou_3d": 6.0}).max_total == 11.5
    with pytest.raises(ValueError, match="iou"):
        RewardTerm(brats_3d.score, {"iou": 6.0})
    with pytest.raises(ValueError, match="overlap_mode"):
        RewardTerm(partial(temporal.score, overlap_mode="dice"))


def test_custom_score_function_needs_max_total() -> None:
    def length_bonus(completion: str, target: dict, weights: dict | None = None) -> dict[str, float]:
        value = min(len(completion), 10) / 10
        return {"length": value, "total": value}

    with pytest.raises(ValueError, match="max_total"):
        RewardTerm(length_bonus)
    reward = Reward([RewardTerm(length_bonus, max_total=1.0)])
    assert reward.max_total == 1.0
    assert reward(["12345"], [{}]) == [{"length": 0.5, "total": 0.5}]


def test_reward_checks_lengths_and_terms() -> None:
    reward = Reward([RewardTerm(mcqa.score)])
    with pytest.raises(ValueError, match="2 completions but 1 targets"):
        reward(["a", "b"], [MCQA_TARGET])
    with pytest.raises(ValueError, match="at least one"):
        Reward([])
    with pytest.raises(ValueError, match="RewardTerm"):
        Reward([mcqa.score])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------- TRL


def trl_kwargs(n: int) -> dict:
    """The extra arguments TRL's GRPOTrainer passes to every reward function."""
    return {
        "prompts": ["p"] * n,
        "completion_ids": [[1, 2]] * n,
        "trainer_state": object(),
        "log_extra": print,
    }


def test_trl_funcs_plain_completions() -> None:
    reward = Reward({"temporal": RewardTerm(temporal.score), "mcqa": RewardTerm(mcqa.score)})
    funcs = as_trl_reward_funcs(reward)
    assert [f.__name__ for f in funcs] == reward.component_names()
    completions = ["<answer>2 to 6</answer>", "<answer>B</answer>"]
    targets = [{**VTG_TARGET, "answer_label": "A"}, {**VTG_TARGET, "answer_label": "B"}]
    outputs = {f.__name__: f(completions=completions, target=targets, **trl_kwargs(2)) for f in funcs}
    assert outputs["temporal/temporal_iou"] == [1.0, 0.0]
    assert outputs["mcqa/accuracy"] == [0.0, 1.0]
    assert outputs["mcqa/format"] == [0.0, 0.5]
    totals = [row["total"] for row in reward(completions, targets)]
    assert [sum(values) for values in zip(*outputs.values(), strict=True)] == pytest.approx(totals)


def test_trl_funcs_conversational_completions_and_json_targets() -> None:
    [accuracy, fmt] = as_trl_reward_funcs(Reward([RewardTerm(mcqa.score)]))
    completions = [
        [{"role": "assistant", "content": "<think>blue</think><answer>B</answer>"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "<answer>A</answer>"}]}],
    ]
    targets = [json.dumps(MCQA_TARGET), MCQA_TARGET]  # a JSON string column works too
    assert accuracy(completions, target=targets) == [1.0, 0.0]
    assert fmt(completions, target=targets) == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"target\[0\]"):
        accuracy(completions, target=["not json", MCQA_TARGET])


def test_trl_funcs_build_targets_from_columns() -> None:
    """A dataset from `vlmlab.tools.convert trl` has an answer_label column rather than a target dict."""
    [accuracy, _] = as_trl_reward_funcs(Reward([RewardTerm(mcqa.score)]))
    completions = [[{"role": "assistant", "content": "<answer>b</answer>"}]] * 2
    scores = accuracy(completions, answer_label=["B", "C"], dataset_name=["x", "y"], **trl_kwargs(2))
    assert scores == [1.0, 0.0]


# ----------------------------------------------------------------------------------- Hydra


@pytest.mark.parametrize(
    ("name", "components", "max_total", "completion", "target"),
    [
        ("brats_3d", list(brats_3d.DEFAULT_WEIGHTS), 8.5, BRATS_PERFECT, BRATS_TARGET),
        (
            "temporal",
            ["temporal_iou", "segment_overlap", "format"],
            2.0,
            "<answer>2.0 to 6.0</answer>",
            VTG_TARGET,
        ),
        ("mcqa", ["accuracy", "format"], 1.5, "<think>blue</think><answer>B</answer>", MCQA_TARGET),
    ],
)
def test_reward_configs_instantiate(
    name: str, components: list[str], max_total: float, completion: str, target: dict, tmp_path: Path
) -> None:
    cfg = compose_config("train", [f"reward={name}"], tmp_path)
    reward = instantiate(cfg.reward)
    assert isinstance(reward, Reward)
    assert reward.component_names() == components
    assert reward.max_total == max_total
    [row] = reward([completion], [target])
    assert row["total"] == pytest.approx(max_total)


def test_temporal_config_is_recall_mode(tmp_path: Path) -> None:
    reward = instantiate(compose_config("train", ["reward=temporal"], tmp_path).reward)
    [row] = reward(["<answer>0.0 to 10.0</answer>"], [VTG_TARGET])  # recall 1, precision 0.4
    assert row["segment_overlap"] == 0.5


def test_no_reward_config_is_empty(tmp_path: Path) -> None:
    assert not compose_config("train", ["reward=none"], tmp_path).get("reward")


# ------------------------------------------------------------------------------ properties

COMPOSED = Reward(
    {"brats": RewardTerm(brats_3d.score), "vtg": RewardTerm(temporal.score), "qa": RewardTerm(mcqa.score)}
)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text()
    | st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "{", "B", " to ", "1.5"]), max_size=20).map(
        "".join
    ),
    target=st.dictionaries(st.sampled_from(["bbox_3d", "duration", "timestamp", "answer_label", "x"]), st.none() | st.floats() | st.text(max_size=3) | st.lists(st.integers(), max_size=6)),
)  # fmt: skip
def test_composed_total_stays_in_range(text: str, target: dict) -> None:
    [row] = COMPOSED([text], [target])
    assert 0.0 <= row["total"] <= COMPOSED.max_total
    assert row["total"] == pytest.approx(sum(v for k, v in row.items() if k != "total"))
