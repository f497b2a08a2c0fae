"""Weighted composition of reward families, and adapters to TRL's reward-function API.

A *family* is a module of :mod:`vlmlab.rewards` (``brats_3d``, ``temporal``, ``mcqa``) with

* ``score(completion: str, target: dict, weights: dict | None = None) -> dict[str, float]``: every
  component, already weighted (its value is what it adds to the total), plus ``"total"``;
* ``DEFAULT_WEIGHTS: dict[str, float]`` (component -> weight) and ``MAX_TOTAL`` (their sum).

:class:`RewardTerm` binds a family's ``score`` (usually a ``functools.partial`` made by Hydra's
``_partial_: true``) to its weights; :class:`Reward` sums several terms over a batch::

    reward = Reward({"temporal": RewardTerm(temporal.score), "mcqa": RewardTerm(mcqa.score)})
    reward(["<answer>0.1 to 0.5</answer>", ...], [sample.target, ...])
    # -> [{"temporal/temporal_iou": 0.8, ..., "mcqa/accuracy": 0.0, ..., "total": 1.9}, ...]

Component names are prefixed ``"<term>/"`` only when several terms are composed, so a single
family logs under its own names. :func:`as_trl_reward_funcs` turns a :class:`Reward` into TRL
``GRPOTrainer`` reward functions, one per component (TRL sums them with weight 1, which gives
the same total because components are already weighted).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

__all__ = [
    "Reward",
    "RewardTerm",
    "as_trl_reward_funcs",
    "completion_text",
    "merge_weights",
]

ScoreFn = Callable[..., dict[str, float]]
TOTAL = "total"
# Arguments TRL's GRPOTrainer passes to every reward function besides the dataset's columns.
TRL_ARGUMENTS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)


def merge_weights(defaults: Mapping[str, float], weights: Mapping[str, Any] | None) -> dict[str, float]:
    """``defaults`` overridden by ``weights`` (a partial mapping is fine).

    Raises ValueError for an unknown component name or a weight that is not a finite number >= 0:
    weights are configuration, so a typo must stop the run rather than silently score nothing.
    """
    merged = dict(defaults)
    if weights is None:
        return merged
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward weights must be a mapping of component -> weight, got {weights!r}")
    unknown = sorted(str(k) for k in weights if k not in defaults)
    if unknown:
        raise ValueError(f"unknown reward component(s) {unknown}; known: {sorted(defaults)}")
    for name, value in weights.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ValueError(f"reward weight {name!r} must be a finite number >= 0, got {value!r}")
        merged[name] = float(value)
    return merged


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or a conversational completion (TRL's format).

    A conversation (a list of ``{"role", "content"}`` messages) gives its last assistant message
    (its last message when none says ``assistant``); ``content`` may be a string or a list of
    ``{"type": "text", "text": ...}`` parts, which are concatenated. Anything else gives ``""``
    (a reward must survive any input).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence) and completion:
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        chosen = assistant or messages
        return _content_text(chosen[-1].get("content")) if chosen else ""
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _family_defaults(score: ScoreFn) -> tuple[Mapping[str, float] | None, str]:
    """``(DEFAULT_WEIGHTS, short module name)`` of the family a score function (or partial of one) is from."""
    fn: Any = score
    while isinstance(fn, partial):
        fn = fn.func
    fn = inspect.unwrap(fn)
    module = inspect.getmodule(fn)
    name = module.__name__.rsplit(".", 1)[-1] if module is not None else getattr(fn, "__name__", "reward")
    defaults = getattr(module, "DEFAULT_WEIGHTS", None) if module is not None else None
    return (defaults if isinstance(defaults, Mapping) else None), name


class RewardTerm:
    """One family's score function with its weights.

    score: ``score(completion, target, weights) -> {component: value, ..., "total": float}``, e.g.
        ``vlmlab.rewards.temporal.score`` or a ``functools.partial`` of it (Hydra ``_partial_: true``).
    weights: component -> weight, overriding the family's ``DEFAULT_WEIGHTS`` (None: the defaults).
        Checked here: an unknown component or a negative / non-finite weight raises ValueError.
    prefix: name of this term in a composed :class:`Reward` (components become ``"prefix/name"``);
        empty: the dict key, or the family's module name (``"temporal"``).
    max_total: the best total this term can give; computed from the weights for a family, needed
        only for a custom score function without ``DEFAULT_WEIGHTS`` in its module.
    """

    def __init__(
        self,
        score: ScoreFn,
        weights: Mapping[str, float] | None = None,
        prefix: str = "",
        max_total: float | None = None,
    ):
        if not callable(score):
            raise ValueError(f"RewardTerm score must be callable, got {score!r}")
        if "/" in prefix:
            raise ValueError(f"RewardTerm prefix must not contain '/', got {prefix!r}")
        self.score = score
        self.weights = dict(weights) if weights is not None else None
        self.prefix = prefix
        defaults, self.family = _family_defaults(score)
        # One call on empty input: checks the weights (and e.g. temporal's overlap_mode) at
        # construction and lists the components; a family never raises on text or targets.
        probe = score("", {}, self.weights)
        if not isinstance(probe, Mapping) or TOTAL not in probe:
            raise ValueError(f"{self.family}: score must return a dict of components and {TOTAL!r}")
        self.components: tuple[str, ...] = tuple(k for k in probe if k != TOTAL)
        if defaults is not None:
            effective = merge_weights(defaults, self.weights)
            self.max_total = float(sum(effective.values())) if max_total is None else float(max_total)
        elif max_total is not None:
            self.max_total = float(max_total)
        else:
            raise ValueError(
                f"{self.family}: the score function's module has no DEFAULT_WEIGHTS; give RewardTerm max_total"
            )

    def __call__(self, completion: str, target: Mapping[str, Any]) -> dict[str, float]:
        """Components and ``"total"`` of one completion (unprefixed)."""
        return {k: float(v) for k, v in self.score(completion, target, self.weights).items()}

    def __repr__(self) -> str:
        return f"RewardTerm({self.family}, weights={self.weights}, prefix={self.prefix!r})"


class Reward:
    """A weighted sum of reward terms, evaluated on a batch of completions.

    terms: a list of :class:`RewardTerm`, or a dict name -> term (the name is the prefix of its
        components unless the term sets one). With one term, components keep their own names
        unless the term sets a prefix; with several, each is ``"<prefix>/<component>"``.

    ``reward(completions, targets)`` gives one dict per completion: every (prefixed) component and
    ``"total"``, the sum of the terms' totals. Completions are strings or conversational
    completions (see :func:`completion_text`); targets are the samples' ``target`` dicts.
    """

    def __init__(self, terms: Sequence[RewardTerm] | Mapping[str, RewardTerm]):
        if isinstance(terms, Mapping):
            named = [(str(key), term) for key, term in terms.items()]
        else:
            named = [("", term) for term in terms]
        if not named:
            raise ValueError("Reward needs at least one RewardTerm")
        for key, term in named:
            if not isinstance(term, RewardTerm):
                raise ValueError(f"Reward term {key!r} must be a RewardTerm, got {type(term).__name__}")
        several = len(named) > 1
        self.terms: list[tuple[str, RewardTerm]] = []
        for key, term in named:
            prefix = term.prefix or ((key or term.family) if several else "")
            self.terms.append((prefix, term))
        names = [self._name(prefix, c) for prefix, term in self.terms for c in term.components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates or TOTAL in names:
            raise ValueError(
                f"reward component names must be unique and not {TOTAL!r}: {duplicates or [TOTAL]}; "
                "give the terms distinct prefixes"
            )
        self._names = names

    @staticmethod
    def _name(prefix: str, component: str) -> str:
        return f"{prefix}/{component}" if prefix else component

    def component_names(self) -> list[str]:
        """Every (prefixed) component name, in output order; ``"total"`` is not among them."""
        return list(self._names)

    @property
    def max_total(self) -> float:
        """The best total: every term at its best."""
        return float(sum(term.max_total for _, term in self.terms))

    def score_one(self, completion: Any, target: Mapping[str, Any]) -> dict[str, float]:
        """Components and total of one completion."""
        text = completion_text(completion)
        out: dict[str, float] = {}
        total = 0.0
        for prefix, term in self.terms:
            scores = term(text, target)
            for component in term.components:
                out[self._name(prefix, component)] = scores[component]
            total += scores[TOTAL]
        out[TOTAL] = total
        return out

    def __call__(
        self, completions: Sequence[Any], targets: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, float]]:
        """One dict of components and ``"total"`` per completion; ``targets[i]`` belongs to ``completions[i]``."""
        if len(completions) != len(targets):
            raise ValueError(f"{len(completions)} completions but {len(targets)} targets")
        return [self.score_one(c, t) for c, t in zip(completions, targets, strict=True)]

    def __repr__(self) -> str:
        return f"Reward({[term for _, term in self.terms]})"


def _trl_targets(completions: Sequence[Any], kwargs: Mapping[str, Any], target_key: str) -> list[Any]:
    """The targets of a TRL batch: the ``target_key`` column, or a dict of the per-row columns.

    TRL passes every dataset column as a list with one entry per completion. A dataset made by
    ``python -m vlmlab.tools.convert trl`` has ``answer_label`` etc. as columns rather than a
    ``target`` dict, so without ``target_key`` each target is built from the other columns.
    A string target is decoded as JSON (Arrow datasets often store dicts that way).
    """
    n = len(completions)
    if target_key in kwargs:
        targets = list(kwargs[target_key])
        if len(targets) != n:
            raise ValueError(f"{n} completions but {len(targets)} {target_key!r} values")
        decoded = []
        for i, target in enumerate(targets):
            if isinstance(target, str):
                try:
                    target = json.loads(target)
                except ValueError as error:
                    raise ValueError(f"{target_key}[{i}] is a string but not JSON: {error}") from error
            decoded.append(target)
        return decoded
    columns = {
        k: v
        for k, v in kwargs.items()
        if k not in TRL_ARGUMENTS and isinstance(v, list | tuple) and len(v) == n
    }
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def _component_func(reward: Reward, name: str, target_key: str) -> Callable[..., list[float]]:
    def reward_func(completions: list[Any], **kwargs: Any) -> list[float]:
        targets = _trl_targets(completions, kwargs, target_key)
        return [row[name] for row in reward(completions, targets)]

    reward_func.__name__ = reward_func.__qualname__ = name
    reward_func.__doc__ = f"TRL reward function: component {name!r} of {reward!r}."
    return reward_func


def as_trl_reward_funcs(reward: Reward, target_key: str = "target") -> list[Callable[..., list[float]]]:
    """TRL ``GRPOTrainer`` reward functions for ``reward``: one per component, ``__name__`` = its name.

    Each is ``f(completions, **kwargs) -> list[float]`` (TRL's signature); completions are strings
    or conversational (``[{"role": "assistant", "content": ...}]``). Targets come from the dataset
    column ``target_key`` (or, without one, from the per-row columns, e.g. ``answer_label``).
    Each function scores the whole reward and keeps its component: simple, and scoring text is
    cheap next to generating it. With TRL's default ``reward_weights`` (all 1) the sum is ``total``.
    """
    return [_component_func(reward, name, target_key) for name in reward.component_names()]
