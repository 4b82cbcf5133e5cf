"""Alignment methods by name: a registry of (config class, trainer), next to the rewards'.

`align`, the quickstart, the studies and users reach a method the same way:
`method("ecpo").make_config(learning_rate=3e-4)` and `method("ecpo").trainer(...)`. A
method of your own is a trainer class (usually a subclass of one of ours) registered under
a name, with the config class it takes and the config values its name fixes:

    from onerec_lab.experiment import register_method
    from trainers.grpo import GRPOConfig, GRPOTrainer

    @register_method("my_grpo", config=GRPOConfig, fixed={"loss_type": "grpo"})
    class MyGRPO(GRPOTrainer):
        def prepare(self, batch): ...

A trainer is called as `trainer(policy, reward, resources, catalog, session_config, config,
ntp_data, metadata=...)` (`trainers.online.OnlineTrainer`'s signature) and has `train()`,
returning a `trainers.online.OnlineResult`. Plugins (`plugins.py`) load such files into the
registry, for the command line too.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rewards.registry import Origin
from trainers.dpo import DPOConfig, DPOTrainer
from trainers.feedback_rl import FeedbackRLConfig, FeedbackRLTrainer
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.rsft import (
    LoggedRSFTConfig,
    LoggedRSFTTrainer,
    RSFTConfig,
    RSFTTrainer,
    RWSFTConfig,
    RWSFTTrainer,
)


@dataclass(frozen=True)
class AlignmentMethod:
    """A registered method: its config class, its trainer, the values its name fixes."""

    name: str
    config_class: type  # a dataclass (an OnlineConfig or one of its subclasses)
    trainer: Callable[..., Any]  # a trainer class (module docstring's signature)
    fixed: Mapping[str, Any]  # config fields the name fixes, e.g. loss_type="ecpo"
    summary: str  # one line for `onerec-lab align --help`
    origin: str  # where it was registered (file:line), for conflicts

    def make_config(self, config: Any = None, **settings: Any) -> Any:
        """The method's config: `config` (an instance of `config_class`) or the defaults,
        with `settings` replaced; the fixed values must not be changed."""
        clashes = {name: value for name, value in settings.items()
                   if name in self.fixed and value != self.fixed[name]}
        if config is None:
            names = {field.name for field in dataclasses.fields(self.config_class)}
            unknown = sorted(set(settings) - names)
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"{self.name} has no setting {unknown[0]!r}{hint}; its settings are the "
                    f"fields of {self.config_class.__name__}: {', '.join(sorted(names))}"
                )
            config = self.config_class(**{**self.fixed, **settings})
        else:
            if not isinstance(config, self.config_class):
                raise ValueError(
                    f"method {self.name!r} takes a {self.config_class.__name__}, got a "
                    f"{type(config).__name__}; build one with method({self.name!r}).make_config()"
                )
            config = dataclasses.replace(config, **settings) if settings else config
            clashes |= {name: getattr(config, name) for name, value in self.fixed.items()
                        if getattr(config, name) != value}
        if clashes:
            name, value = next(iter(clashes.items()))
            raise ValueError(f"method {self.name!r} fixes {name}={self.fixed[name]!r}, got "
                             f"{value!r}; choose the method that has it instead")
        return config


METHODS: dict[str, AlignmentMethod] = {}


def register_method(name: str, config: type, fixed: Mapping[str, Any] | None = None,
                    summary: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a trainer class available to `align` as `name`."""
    if not name.isidentifier():
        raise ValueError(f"method name {name!r} must be an identifier (letters, digits, _)")
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"method {name!r}: config must be a dataclass class, got {config!r}")
    unknown = set(fixed or {}) - {field.name for field in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"method {name!r} fixes {sorted(unknown)}, which "
                         f"{config.__name__} does not have")

    def decorator(trainer: Callable[..., Any]) -> Callable[..., Any]:
        origin = str(Origin.of(trainer))
        known = METHODS.get(name)
        if known is not None and known.trainer is not trainer and known.origin != origin:
            raise ValueError(f"method {name!r} is registered twice: {known.origin} and "
                             f"{origin}; rename one of them")
        doc = (inspect.getdoc(trainer) or "").splitlines()
        METHODS[name] = AlignmentMethod(name, config, trainer, dict(fixed or {}),
                                        summary or (doc[0] if doc else ""), origin)
        return trainer

    return decorator


def method(name: str) -> AlignmentMethod:
    """The method registered as `name`; an unknown name names the known ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}{hint} Known methods: "
                         f"{', '.join(METHODS)} (a plugin can add more: --plugin FILE)")
    return METHODS[name]


register_method("rsft", RSFTConfig, summary="RSFT: next-token training on the best rollouts "
                "of each group (the report's reject-sampling fine-tuning)")(RSFTTrainer)
for _loss_type, _summary in (
        ("grpo", "GRPO: group-relative advantages, PPO-clipped ratio per item"),
        ("ecpo", "ECPO: GRPO with the report's early clipping of pi_old (delta)"),
        ("dr_grpo", "Dr. GRPO: GRPO without the std scaling of advantages"),
        ("gbpo", "GBPO: OneRec-V2's gradient-bounded ratio, no clip, no sample dropped"),
        ("dapo", "TRL's dapo: clipped ratio per code (or per item: "
                 "--importance-sampling-level sequence), summed over codes"),
        ("bnpo", "TRL's bnpo: dapo's loss normalised by the batch's codes"),
        ("cispo", "TRL's cispo: the ratio clipped and detached, never the gradient"),
        ("sapo", "TRL's sapo: a soft sigmoid gate on the ratio instead of a clip")):
    register_method(_loss_type, GRPOConfig, {"loss_type": _loss_type}, _summary)(GRPOTrainer)
register_method("feedback_rl", FeedbackRLConfig, summary="OneRec-V2's feedback RL: +1 / -1 "
                "from the user's observed play time (duration-aware) and hates, GBPO by "
                "default")(FeedbackRLTrainer)
register_method("rwsft", RWSFTConfig, summary="reward-weighted SFT: next-token training on "
                "every sample, weighted exp(r / lambda) over the batch")(RWSFTTrainer)
register_method("dpo", DPOConfig, summary="DPO on best / worst of N beams (OneRec v1's "
                "iterative preference alignment)")(DPOTrainer)
register_method("rsft_logs", LoggedRSFTConfig, summary="the report's RSFT on logs: next-token "
                "training on the logged sessions with the longest play")(LoggedRSFTTrainer)
