"""Rewards by name: a registry of factories and `build(spec, **resources)`.

A factory is a function (or class) registered under a name. `build` parses the spec
(`rewards.compose`), and calls each named factory with:
- the rewards written positionally in the spec (`business(pscore)` passes the P-score reward),
- the spec's keyword literals (`alpha=0.5`),
- and, for any other parameter, the resource of that name given to `build`
  (`pscore_model=`, `codec=`, `catalog=`), so a factory declares what it needs
  just by naming it.

A factory may return a `RewardModel`, or simply a function `batch -> (B,)` tensor: `build`
wraps it, names it by its spec text, and checks every output it produces.

    @register("diversity")
    def diversity(catalog):
        def reward(batch):
            ...
        return reward
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from rewards.business import BusinessConfig, BusinessWeighting
from rewards.compose import Call, Combination, SpecError, parse_spec, weighted_sum
from rewards.format import FormatReward
from rewards.oracle import ENGAGEMENT, OracleReward
from rewards.protocol import (
    REQUIREMENTS,
    RewardInput,
    RewardModel,
    RewardOutput,
    check_slate_rewards,
)
from rewards.pscore import PScoreModel, PScoreReward

REGISTRY: dict[str, Callable[..., Any]] = {}


def register(
    name: str, requires: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a reward factory available to specs under `name`.

    `requires` names what the built reward reads from a batch (a subset of REQUIREMENTS);
    it lets callers such as the TRL adapter know, e.g., that a reward needs the user context.
    A reward object that sets its own `requires` attribute keeps it.
    """
    if not name.isidentifier():
        raise ValueError(f"reward name {name!r} must be an identifier (letters, digits, _)")
    unknown = set(requires) - set(REQUIREMENTS)
    if unknown:
        raise ValueError(f"requires names {sorted(unknown)}; choose from {REQUIREMENTS}")

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name] is not factory:
            raise ValueError(f"a reward named {name!r} is already registered; pick another name")
        factory.reward_requires = frozenset(requires)
        REGISTRY[name] = factory
        return factory

    return decorator


class NamedReward:
    """A built reward under its spec name, with every output checked."""

    def __init__(
        self, name: str, reward: Callable[[RewardInput], Any], requires: frozenset[str]
    ) -> None:
        self.name, self.reward = name, reward
        self.requires = frozenset(getattr(reward, "requires", requires))

    def __call__(self, batch: RewardInput) -> RewardOutput:
        output = self.reward(batch)
        if isinstance(output, RewardOutput):  # its own entry is renamed to the spec text
            own = getattr(self.reward, "name", None)
            total = output.total
            components = {key: value for key, value in output.components.items() if key != own}
        else:
            total, components = output, {}
        check_slate_rewards(total, f"reward {self.name!r}", batch.batch_size)
        return RewardOutput(total, {**components, self.name: total})


class NamedItemReward(NamedReward):
    """A `NamedReward` over a reward that decomposes over items."""

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        scores = self.reward.item_scores(batch)
        if not isinstance(scores, torch.Tensor) or scores.shape != batch.items.shape:
            raise ValueError(
                f"reward {self.name!r}: item_scores must be a tensor of shape "
                f"{tuple(batch.items.shape)}, got {getattr(scores, 'shape', type(scores))}"
            )
        if not torch.isfinite(scores).all():
            raise ValueError(f"reward {self.name!r}: item scores contain NaN or infinite values")
        return scores


def _instantiate(call: Call, spec: str, resources: dict[str, Any]) -> RewardModel:
    if call.name not in REGISTRY:
        close = difflib.get_close_matches(call.name, REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"unknown reward {call.name!r}{hint} Known rewards: {', '.join(sorted(REGISTRY))}",
            spec,
            call.position,
        )
    factory = REGISTRY[call.name]
    parameters = inspect.signature(factory).parameters.values()
    positional = [p for p in parameters if p.kind == p.POSITIONAL_ONLY]
    takes_many = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    too_many = len(call.args) > len(positional) and not takes_many
    if too_many or len(call.args) < sum(p.default is p.empty for p in positional):
        raise SpecError(
            f"{call.name}() takes {len(positional)} reward argument(s), got {len(call.args)}",
            spec,
            call.position,
        )
    keywords = {
        p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    for key, _ in call.kwargs:
        if key not in keywords:
            raise SpecError(
                f"{call.name}() has no argument {key!r}; it accepts "
                f"{', '.join(keywords) or 'no keyword arguments'}",
                spec,
                call.position,
            )
    values = dict(call.kwargs)
    for key, parameter in keywords.items():
        if key not in values and key in resources:
            values[key] = resources[key]
        elif key not in values and parameter.default is parameter.empty:
            raise ValueError(
                f"reward {call.name!r} needs {key!r}: pass it to build(spec, {key}=...) or "
                f"write {call.name}({key}=...) in the spec"
            )
    inner = [_combine(arg, spec, resources) for arg in call.args]
    try:
        reward = factory(*inner, **values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"building {call.text!r}: {error}") from error
    wrapper = NamedItemReward if hasattr(reward, "item_scores") else NamedReward
    return wrapper(call.text, reward, getattr(factory, "reward_requires", frozenset()))


def _combine(combination: Combination, spec: str, resources: dict[str, Any]) -> RewardModel:
    return weighted_sum(
        [(weight, _instantiate(call, spec, resources)) for weight, call in combination.terms]
    )


def build(spec: str, **resources: Any) -> RewardModel:
    """The reward a spec names, e.g. `build("pscore + 0.5*format", pscore_model=m, codec=c)`.

    Resources a spec does not use are ignored, so one call site can offer them all.
    """
    return _combine(parse_spec(spec), spec, resources)


@register("pscore", requires=("context",))
def pscore(pscore_model: PScoreModel) -> PScoreReward:
    """The fitted P-score (fused, Pareto-weighted) per item, averaged over the slate."""
    if not isinstance(pscore_model, PScoreModel):
        raise ValueError(
            f"pscore_model must be a PScoreModel (rewards.load_pscore(folder)), got "
            f"{type(pscore_model).__name__}"
        )
    return PScoreReward(pscore_model)


@register("format")
def format_validity(codec: Any = None) -> FormatReward:
    """Share of legal, non-repeated slots (codes checked by `codec` when the batch has codes)."""
    return FormatReward(codec)


@register("business")
def business(
    inner: RewardModel,
    /,
    catalog: Any,
    alpha: float = 0.5,
    f: float = 0.3,
    fresh_days: float = 0.0,
    fresh_boost: float = 0.0,
    long_tail_quantile: float = 0.0,
    long_tail_boost: float = 0.0,
) -> BusinessWeighting:
    """Content-farm demotion (alpha above share f) and fresh / long-tail boosts on `inner`."""
    config = BusinessConfig(alpha, f, fresh_days, fresh_boost, long_tail_quantile, long_tail_boost)
    return BusinessWeighting(inner, catalog, config)


@register("oracle", requires=("feedback",))
def oracle(field: str = ENGAGEMENT) -> OracleReward:
    """The simulator's true per-item outcome `field` (info['feedback']), slate-averaged."""
    return OracleReward(field)
