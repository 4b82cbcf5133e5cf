"""The reward contract: a typed batch in, a reward per slate and a named breakdown out.

Every reward of the lab (P-score, format, business weighting, oracle, user-registered ones and
their weighted sums) is a `RewardModel`: `reward(batch) -> RewardOutput`. Rewards that
decompose over the items of a slate are also `ItemReward`s: `item_scores(batch) -> (B, S)`,
and their slate reward is `slate_mean` of those scores (see there for why a mean over all S
positions, blanks and repeats counting zero). Wrappers such as business weighting need that
per-item view.

Declarations: a reward names what it reads in `requires` (a subset of `REQUIREMENTS`), and
says with `judges_codes` whether it has an opinion on an illegal code. `TRUTH` ("feedback",
the simulator's true outcome) is withheld from every reward that does not declare it: the
rewards `build` returns (and the `Declared` wrappers) call what they wrap with
`visible_to(reward, batch)`, so an undeclared reward finds `batch.feedback` None. `truth_terms`
names the parts of a reward that read the truth, for runs that must refuse it.

Letters used in shape comments: B batch (slates), S slate size, L semantic-ID levels,
F feedback fields (`envs.spec.FEEDBACK_FIELDS`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from envs.spec import BLANK, NUM_FEEDBACK

# What a reward may need from a batch; `RewardModel.requires` names a subset of these.
REQUIREMENTS = ("context", "codes", "feedback")
# The requirement that is the simulator's truth (the expected or drawn outcome of a shown
# slate), as opposed to what production observes: only oracle rewards declare it.
TRUTH = "feedback"


def as_tensor(value: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """A numpy array, a list or a tensor as a tensor (on `device` when given)."""
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device)
    try:
        return torch.as_tensor(np.asarray(value), device=device)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be a tensor or an array, got {type(value).__name__}: {error}"
        ) from error


def _check_integer(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{name} must hold integer ids, got dtype {tensor.dtype}; cast to int64")
    return tensor.long()


class Codec(Protocol):
    """Semantic IDs -> items (`policies.codec.SemanticIdCodec` has these two methods)."""

    def decode(self, codes: torch.Tensor) -> Any: ...  # (..., L) -> (...) item ids, BLANK illegal

    def is_legal(self, codes: torch.Tensor) -> Any: ...  # (B, S, L) -> (B, S) bool


def decode_codes(codec: Codec, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Items and legality of codes through `codec`, as tensors on `codes`' device.

    Returns ((B, S) int64 items with BLANK where illegal, (B, S) bool legal).
    """
    items = _check_integer(
        as_tensor(codec.decode(codes), "codec.decode(codes)", codes.device), "codec.decode(codes)"
    )
    legal = as_tensor(codec.is_legal(codes), "codec.is_legal(codes)", codes.device).bool()
    if items.shape != codes.shape[:-1] or legal.shape != codes.shape[:-1]:
        raise ValueError(
            f"the codec returned items {tuple(items.shape)} and legality {tuple(legal.shape)} "
            f"for codes {tuple(codes.shape)}; both must be {tuple(codes.shape[:-1])}"
        )
    return torch.where(legal, items, torch.full_like(items, BLANK)), legal & (items != BLANK)


@dataclass(frozen=True)
class RewardInput:
    """One batch of slates to score. Arrays are converted to tensors on `items`' device.

    `context` is the observation the slates were generated for (the simulator's dict of
    pathways, each batched along B); `items` are the shown items (BLANK for an empty slot,
    e.g. an illegal code); `codes` are the generated semantic IDs when the slates came from
    a generative policy; `feedback` is the simulator's TRUE per-item outcome (the vector env's
    `info["feedback"]`, or logged feedback for logged slates): only the oracle reads it.
    """

    items: torch.Tensor  # (B, S) int64, BLANK = no item
    context: Mapping[str, torch.Tensor] | None = None  # each (B, ...)
    codes: torch.Tensor | None = None  # (B, S, L) int64
    feedback: torch.Tensor | None = None  # (B, S, F) float32, true outcome

    def __post_init__(self) -> None:
        items = _check_integer(as_tensor(self.items, "items"), "items")
        if items.dim() != 2:
            raise ValueError(
                f"items must be (B, S) item ids, got shape {tuple(items.shape)}; add a batch "
                "dimension with items[None] for a single slate"
            )
        if (items < BLANK).any():
            raise ValueError(f"items must be >= {BLANK} (BLANK), got min {int(items.min())}")
        device = items.device
        batch = items.shape[0]
        object.__setattr__(self, "items", items)
        if self.context is not None:
            context = {}
            for key, value in self.context.items():
                tensor = as_tensor(value, f"context[{key!r}]", device)
                if tensor.dim() == 0 or tensor.shape[0] != batch:
                    raise ValueError(
                        f"context[{key!r}] has shape {tuple(tensor.shape)}, expected a batch "
                        f"dimension of {batch} (one row per slate)"
                    )
                context[key] = tensor
            object.__setattr__(self, "context", context)
        if self.codes is not None:
            codes = _check_integer(as_tensor(self.codes, "codes", device), "codes")
            if codes.dim() != 3 or codes.shape[:2] != items.shape:
                raise ValueError(
                    f"codes must be (B, S, L) with (B, S) = {tuple(items.shape)}, got "
                    f"{tuple(codes.shape)}"
                )
            object.__setattr__(self, "codes", codes)
        if self.feedback is not None:
            feedback = as_tensor(self.feedback, "feedback", device).float()
            if feedback.shape != (*items.shape, NUM_FEEDBACK):
                raise ValueError(
                    f"feedback must be (B, S, F) = {(*items.shape, NUM_FEEDBACK)} in "
                    f"FEEDBACK_FIELDS order, got {tuple(feedback.shape)}"
                )
            if not torch.isfinite(feedback).all():
                raise ValueError("feedback contains NaN or infinite values; fix the source")
            object.__setattr__(self, "feedback", feedback)

    @classmethod
    def from_codes(
        cls, codes: Any, codec: Codec, context: Mapping[str, Any] | None = None, **extra: Any
    ) -> RewardInput:
        """A batch of generated code slates (B, S, L): items are decoded through `codec`."""
        codes = _check_integer(as_tensor(codes, "codes"), "codes")
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, S, L), got shape {tuple(codes.shape)}")
        items, _ = decode_codes(codec, codes)
        return cls(items=items, context=context, codes=codes, **extra)

    def without_feedback(self) -> RewardInput:
        """This batch with the truth withheld (`feedback` None), for a reward that does not
        declare it. Nothing is re-validated or copied: the fields were checked already."""
        if self.feedback is None:
            return self
        withheld = copy.copy(self)
        object.__setattr__(withheld, "feedback", None)
        return withheld

    @property
    def batch_size(self) -> int:
        return int(self.items.shape[0])

    @property
    def shown(self) -> torch.Tensor:
        """(B, S) bool: slots the user sees (an item, not blank, not repeated)."""
        return shown_slots(self.items)

    def require(self, what: str, reward: str) -> None:
        """Raise a ValueError naming what `reward` needs when the batch lacks it."""
        if what == "context" and self.context is None:
            raise ValueError(
                f"reward {reward!r} needs the user context; build RewardInput(context=obs, ...)"
                " with the observation the slates were generated for"
            )
        if what == "codes" and self.codes is None:
            raise ValueError(f"reward {reward!r} needs the generated codes; pass codes=(B, S, L)")
        if what == "feedback" and self.feedback is None:
            raise ValueError(
                f"reward {reward!r} needs the simulator's true outcome; attach "
                "feedback=(B, S, F) from the vector env's info (or logged feedback); a reward "
                "registered without requires=('feedback',) never receives it (only oracle "
                "rewards should declare it)"
            )


@dataclass(frozen=True)
class RewardOutput:
    """A reward per slate and its named components (each unweighted, one value per slate)."""

    total: torch.Tensor  # (B,)
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B,)

    def __post_init__(self) -> None:
        check_slate_rewards(self.total, "total")
        for name, value in self.components.items():
            check_slate_rewards(value, f"component {name!r}", self.total.shape[0])

    @classmethod
    def single(cls, name: str, total: torch.Tensor) -> RewardOutput:
        """The output of a one-component reward."""
        return cls(total=total, components={name: total})


def check_slate_rewards(value: Any, what: str, batch: int | None = None) -> torch.Tensor:
    """Validate a (B,) float tensor of finite rewards; the error names what is wrong."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} must be a torch tensor of shape (B,), got {type(value).__name__}")
    if value.dim() != 1 or (batch is not None and value.shape[0] != batch):
        expected = "(B,)" if batch is None else f"({batch},)"
        raise ValueError(f"{what} must have shape {expected}, got {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise ValueError(f"{what} must be floating point, got {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{what} contains NaN or infinite rewards")
    return value


@runtime_checkable
class RewardModel(Protocol):
    """A reward: `name` (its spec text), `requires` (what it reads from a batch) and a call.

    Optional: `judges_codes` (True when it has an opinion on an illegal code; False when
    absent) and `parts` (the rewards it is made of, for `truth_terms`). What `build` returns
    is always `Declared`: those two and `reads_truth` are there.
    """

    name: str
    requires: frozenset[str]

    def __call__(self, batch: RewardInput) -> RewardOutput: ...


@runtime_checkable
class ItemReward(RewardModel, Protocol):
    """A reward that decomposes over items: slate reward = `slate_mean(item_scores)`."""

    def item_scores(self, batch: RewardInput) -> torch.Tensor: ...  # (B, S), 0 on blanks


class Declared:
    """What a reward declares, as properties a caller can rely on.

    `requires`: what it reads from a batch (it or any reward inside it); `judges_codes`: it
    has an opinion on an illegal code (the format reward: a code that names no item is
    worth 0, not "no opinion"); `reads_truth`: it, or a reward inside it, reads the
    simulator's truth. Subclasses set `requires` and `judges_codes` per instance or class.
    """

    requires: frozenset[str] = frozenset()
    judges_codes: bool = False

    @property
    def reads_truth(self) -> bool:
        """Whether the simulator's truth (`TRUTH`) reaches this reward or one inside it."""
        return TRUTH in self.requires

    @property
    def parts(self) -> tuple[RewardModel, ...]:
        """The rewards this one is made of (none for a leaf)."""
        return ()


def visible_to(reward: RewardModel, batch: RewardInput) -> RewardInput:
    """What `reward` may see of `batch`: the truth only if it declares `TRUTH`."""
    return batch if TRUTH in reward.requires else batch.without_feedback()


def truth_terms(reward: RewardModel) -> list[str]:
    """Names of the innermost rewards inside `reward` that read the simulator's truth.

    [] when `reward` reads none: a proxy run (one that may not look at the truth) checks
    this and refuses the reward otherwise, naming these terms. For example
    `truth_terms(build("pscore + 0.2*oracle(field='like')", ...)) == ["oracle(field='like')"]`
    and `business(pscore + oracle, ...)` names `oracle`. A reward that reads the truth but
    exposes no `parts` is named itself.
    """
    if TRUTH not in reward.requires:
        return []
    inner = [name for part in getattr(reward, "parts", ()) for name in truth_terms(part)]
    return inner or [reward.name]


def repeated_after_first(items: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, S) bool: slots whose item already sits in an earlier slot where `keep` is true."""
    same = items[:, :, None] == items[:, None, :]  # (B, S, S): slot i holds slot j's item
    slate = items.shape[1]
    earlier = torch.ones(slate, slate, dtype=torch.bool, device=items.device).tril(-1)  # j < i
    return (same & earlier & keep[:, None, :]).any(-1)  # (B, S)


def shown_slots(items: torch.Tensor) -> torch.Tensor:
    """(B, S) bool: the slot holds an item that no earlier slot holds (what the simulator
    shows: blanks and repeats are not shown)."""
    present = items != BLANK
    return present & ~repeated_after_first(items, present)


def slate_mean(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Slate reward from per-item scores: the mean over all S positions, where blanks and
    repeated items count 0 (the simulator does not show them).

    A mean (not a sum) keeps rewards comparable across slate sizes; counting a blank as zero
    (not averaging over shown items only) means that, for non-negative item rewards, an
    illegal code can never raise a slate's reward by removing a weak item from the average,
    and counting a repeat as zero means copying the best item cannot either. Returns (B,).
    """
    return torch.where(shown_slots(items), scores, torch.zeros_like(scores)).mean(dim=1)  # (B,)
