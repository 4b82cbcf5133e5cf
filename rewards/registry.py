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

Each name is registered with its declarations (`requires`: what the reward reads;
`judges_codes`: whether it has an opinion on an illegal code) and its origin (the factory's
file and line), so a name registered twice by two plugins is an error naming both. What
`build` returns withholds the simulator's truth from every reward that did not declare it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rewards.business import BusinessConfig, BusinessWeighting
from rewards.compose import Call, Combination, SpecError, parse_spec, weighted_sum
from rewards.format import FormatReward
from rewards.oracle import ENGAGEMENT, OracleReward
from rewards.protocol import (
    REQUIREMENTS,
    TRUTH,
    Declared,
    RewardInput,
    RewardModel,
    RewardOutput,
    check_slate_rewards,
    visible_to,
)
from rewards.pscore import PScoreModel, PScoreReward


@dataclass(frozen=True)
class Origin:
    """Where a factory was defined: its source file and line, else its module."""

    file: str  # the source file as Python loaded it, or the module name when no file is known
    line: int | None  # first line of the definition (its first decorator); None when unknown
    qualname: str  # the factory's qualified name, e.g. "novelty" or "Plugin.novelty"

    def __str__(self) -> str:  # "path/plugin.py:12", or "module.qualname" without a source
        return f"{self.file}.{self.qualname}" if self.line is None else f"{self.file}:{self.line}"

    @classmethod
    def of(cls, factory: Callable[..., Any]) -> Origin:
        """The origin of `factory` (a function, a class or a callable object)."""
        qualname = getattr(factory, "__qualname__", type(factory).__qualname__)
        try:
            file = inspect.getsourcefile(factory) or inspect.getfile(factory)
            line = inspect.getsourcelines(factory)[1]
        except (OSError, TypeError):  # built in, defined in a REPL or exec'd, or an instance
            module = getattr(factory, "__module__", None) or type(factory).__module__
            return cls(module, None, qualname)
        return cls(file, line, qualname)


@dataclass(frozen=True)
class Registration:
    """A registered reward: its factory, its declarations and where it came from."""

    factory: Callable[..., Any]
    requires: frozenset[str]  # what the built reward reads (a subset of REQUIREMENTS)
    judges_codes: bool  # the built reward has an opinion on an illegal code
    origin: Origin


REGISTRY: dict[str, Registration] = {}


def register(
    name: str, requires: tuple[str, ...] = (), judges_codes: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a reward factory available to specs under `name`.

    `requires` names what the built reward reads from a batch (a subset of REQUIREMENTS):
    `context` (the user's observation), `codes` (the generated semantic IDs), `feedback`
    (the simulator's truth, `TRUTH`: only oracle rewards declare it; every other reward is
    called with `batch.feedback` None). It lets callers such as the TRL adapter know, e.g.,
    that a reward needs the user context. `judges_codes=True` says the reward has an opinion
    on an illegal code (a code naming no item), as the format reward does; rewards that score
    items have none, and trainers treat their value there as "no opinion".
    A reward object that sets its own `requires` or `judges_codes` attribute keeps it.

    A name is registered once: registering it again with another factory is a ValueError
    naming both origins, unless the factory is the same one or comes from the same file,
    line and qualified name (the same plugin imported twice), which replaces the entry.
    """
    if not name.isidentifier():
        raise ValueError(f"reward name {name!r} must be an identifier (letters, digits, _)")
    unknown = set(requires) - set(REQUIREMENTS)
    if unknown:
        raise ValueError(f"requires names {sorted(unknown)}; choose from {REQUIREMENTS}")
    if not isinstance(judges_codes, bool):
        raise ValueError(
            f"judges_codes must be True or False, got {judges_codes!r}; True only when the "
            "reward has an opinion on an illegal code"
        )

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        where = Origin.of(factory)
        known = REGISTRY.get(name)
        same_origin = known is not None and known.origin.line is not None and known.origin == where
        if known is not None and known.factory is not factory and not same_origin:
            raise ValueError(
                f"reward {name!r} is registered twice: {known.origin} and {where}; rename "
                "one of them"
            )
        REGISTRY[name] = Registration(factory, frozenset(requires), judges_codes, where)
        return factory

    return decorator


def origin(name: str) -> Origin:
    """Where the reward `name` was registered (`str()` of it reads `file:line`)."""
    if name not in REGISTRY:
        raise ValueError(
            f"no reward named {name!r} is registered; known rewards: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[name].origin


class NamedReward(Declared):
    """A built reward under its spec name, with every output checked.

    Its declarations are the reward object's own `requires` / `judges_codes` where it sets
    them, else the registration's; the wrapped reward sees the truth only if it declares it.
    """

    def __init__(
        self, name: str, reward: Callable[[RewardInput], Any], registration: Registration
    ) -> None:
        self.name, self.reward = name, reward
        self.requires = frozenset(getattr(reward, "requires", registration.requires))
        self.judges_codes = bool(getattr(reward, "judges_codes", registration.judges_codes))

    @property
    def parts(self) -> tuple[RewardModel, ...]:
        return tuple(getattr(self.reward, "parts", ()))

    def __call__(self, batch: RewardInput) -> RewardOutput:
        output = self.reward(visible_to(self, batch))
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
        scores = self.reward.item_scores(visible_to(self, batch))
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
    registration = REGISTRY[call.name]
    factory = registration.factory
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
    settable = [name for name, parameter in keywords.items()
                if name not in resources and _spec_settable(parameter)]
    for key, _ in call.kwargs:
        if key not in keywords:
            raise SpecError(
                f"{call.name}() has no argument {key!r}; it accepts "
                f"{', '.join(keywords) or 'no keyword arguments'}",
                spec,
                call.position,
            )
        if key in resources or not _spec_settable(keywords[key]):
            raise SpecError(
                f"{call.name}() argument {key!r} is supplied by the program, not written in "
                f"the spec; the spec sets {', '.join(settable) or 'none of its arguments'}",
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
    return wrapper(call.text, reward, registration)


def _spec_settable(parameter: inspect.Parameter) -> bool:
    """Whether a spec may write this argument: a number, a string or a flag (a model, a
    catalog or a codec is a resource the program supplies)."""
    literal = ("float", "int", "str", "bool", float, int, str, bool)
    return parameter.annotation in literal or (
        parameter.annotation is parameter.empty
        and isinstance(parameter.default, (float, int, str, bool)))


def _combine(combination: Combination, spec: str, resources: dict[str, Any]) -> RewardModel:
    return weighted_sum(
        [(weight, _instantiate(call, spec, resources)) for weight, call in combination.terms]
    )


def build(spec: str, **resources: Any) -> RewardModel:
    """The reward a spec names, e.g. `build("pscore + 0.5*format", pscore_model=m, codec=c)`.

    Resources a spec does not use are ignored, so one call site can offer them all. The
    result is `Declared` (`requires`, `reads_truth`, `judges_codes`), and every reward in it
    that does not declare the truth is called with `batch.feedback` None.
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


@register("format", judges_codes=True)
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


@register("oracle", requires=(TRUTH,))
def oracle(field: str = ENGAGEMENT) -> OracleReward:
    """The simulator's true per-item outcome `field` (info['feedback']), slate-averaged."""
    return OracleReward(field)
