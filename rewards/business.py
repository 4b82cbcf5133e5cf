"""Business weighting: per-item multipliers on any reward that decomposes over items.

- Content farms (the report's industrial reward): when the share of flagged items in a
  slate exceeds f, each flagged item's reward becomes alpha * r (0 < alpha <= 1); at or
  below the threshold nothing changes. Kuaishou saw their exposure fall 9.59% with watch
  time stable (alpha and f were not published: both are arguments here). The share is
  over all S slots, and a slot the simulator does not show (a blank, a repeat) counts
  against the slate like a flagged one: for a full slate of distinct items this is the
  report's rule, and it keeps `slate_mean`'s promise that an illegal code or a copy of an
  earlier item never raises a slate's reward. (Counting shown items only, as before, broke
  it: blanking one of two flagged items could take the share below f and lift the other's
  demotion: with items 0 and 2 flagged, alpha 0.1, f 0.4 and format as the inner reward,
  [0, 2, 4, 5] scored 0.55 and [-1, 2, 4, 5] 0.75; it is now 0.525.)
- Freshness: items younger than `fresh_days` get (1 + fresh_boost) * r.
- Long tail: items whose popularity lies below the `long_tail_quantile` of the catalog get
  (1 + long_tail_boost) * r.

The multipliers apply per item, before the slate mean (`rewards.protocol.slate_mean`), so
`business(...)` wraps any `ItemReward` (P-score, oracle, format, a weighted sum of those) and
the result is again an `ItemReward`, composable with everything else. Multipliers apply to
non-negative item rewards only; a negative one (a hated item under the oracle's engagement)
is left as it is, so a demotion never raises a reward and a boost never lowers one.

Letters used in shape comments: B batch, S slate, N catalog items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from rewards.compose import number_text
from rewards.protocol import (
    Declared,
    ItemReward,
    RewardInput,
    RewardModel,
    RewardOutput,
    shown_slots,
    slate_mean,
    visible_to,
)


class BusinessCatalog(Protocol):
    """The catalog fields business rules read (`envs.catalog.Catalog` has them)."""

    content_farm: np.ndarray  # (N,) bool
    age_days: np.ndarray  # (N,) float32
    popularity: np.ndarray  # (N,) float32


@dataclass(frozen=True)
class BusinessConfig:
    """The business rules; the defaults demote content farms only."""

    alpha: float = 0.5  # multiplier of flagged items above the threshold (report: not given)
    f: float = 0.3  # flagged share of a slate above which alpha applies (report: not given)
    fresh_days: float = 0.0  # items younger than this are fresh; 0 = no freshness boost
    fresh_boost: float = 0.0  # fresh items get (1 + fresh_boost) times their reward
    long_tail_quantile: float = 0.0  # popularity quantile below which an item is long-tail; 0 = off
    long_tail_boost: float = 0.0  # long-tail items get (1 + long_tail_boost) times their reward

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1] (a demotion), got {self.alpha}")
        if not 0 <= self.f < 1:
            raise ValueError(f"f must be a share in [0, 1), got {self.f}")
        if self.fresh_days < 0 or self.fresh_boost < 0 or self.long_tail_boost < 0:
            raise ValueError(
                "fresh_days, fresh_boost and long_tail_boost must be >= 0, got "
                f"{self.fresh_days}, {self.fresh_boost}, {self.long_tail_boost}"
            )
        if not 0 <= self.long_tail_quantile < 1:
            raise ValueError(f"long_tail_quantile must be in [0, 1), got {self.long_tail_quantile}")

    def describe(self) -> str:
        """The arguments that differ from 'off', as spec keywords (alpha and f always)."""
        shown = {"alpha": self.alpha, "f": self.f}
        if self.fresh_days and self.fresh_boost:
            shown.update(fresh_days=self.fresh_days, fresh_boost=self.fresh_boost)
        if self.long_tail_quantile and self.long_tail_boost:
            shown.update(long_tail_quantile=self.long_tail_quantile,
                         long_tail_boost=self.long_tail_boost)
        return ", ".join(f"{name}={number_text(value)}" for name, value in shown.items())


class BusinessWeighting(Declared):
    """`inner`'s per-item reward times the business multipliers; an `ItemReward` itself.

    It declares what `inner` declares (it reads only the items besides): `inner` sees the
    truth only if it reads it, and an opinion of `inner` on an illegal code stays one.
    """

    def __init__(self, inner: ItemReward, catalog: BusinessCatalog, config: BusinessConfig) -> None:
        if not hasattr(inner, "item_scores"):
            raise ValueError(
                f"business() needs a reward that decomposes over items (pscore, oracle, format, "
                f"or a weighted sum of those); {getattr(inner, 'name', inner)!r} does not"
            )
        self.inner, self.config = inner, config
        self.name = f"business({inner.name}, {config.describe()})"
        self.requires = inner.requires
        self.judges_codes = bool(getattr(inner, "judges_codes", False))
        popularity = np.asarray(catalog.popularity)
        self.flagged = torch.as_tensor(np.asarray(catalog.content_farm, dtype=bool))  # (N,)
        self.fresh = torch.as_tensor(np.asarray(catalog.age_days) < config.fresh_days)  # (N,)
        threshold = (
            np.quantile(popularity, config.long_tail_quantile)
            if config.long_tail_quantile
            else -np.inf
        )
        self.long_tail = torch.as_tensor(popularity < threshold)  # (N,)

    def multipliers(self, items: torch.Tensor) -> torch.Tensor:
        """(B, S) items -> (B, S) multipliers (1 on blanks and repeats)."""
        num_items = self.flagged.shape[0]
        if (items >= num_items).any():
            raise ValueError(
                f"item id {int(items.max())} is outside the business catalog of {num_items} items"
            )
        if self.flagged.device != items.device:  # follow the batch, once, like module.to()
            self.flagged, self.fresh, self.long_tail = (
                table.to(items.device) for table in (self.flagged, self.fresh, self.long_tail)
            )
        shown = shown_slots(items)  # (B, S)
        ids = items.clamp(min=0)
        flagged = self.flagged[ids] & shown  # (B, S)
        fresh = self.fresh[ids] & shown
        long_tail = self.long_tail[ids] & shown
        # (B,) share of the S slots that are flagged or not shown (module docstring)
        share = (flagged | ~shown).sum(1) / items.shape[1]
        demoted = flagged & (share > self.config.f)[:, None]  # (B, S)
        ones = torch.ones(items.shape, device=items.device)
        return (
            torch.where(demoted, self.config.alpha, ones)
            * torch.where(fresh, 1.0 + self.config.fresh_boost, ones)
            * torch.where(long_tail, 1.0 + self.config.long_tail_boost, ones)
        )  # (B, S)

    @property
    def parts(self) -> tuple[RewardModel, ...]:
        return (self.inner,)

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        scores = self.inner.item_scores(visible_to(self.inner, batch))  # (B, S)
        weighted = scores * self.multipliers(batch.items).to(scores.dtype)
        return torch.where(scores >= 0, weighted, scores)  # (B, S)

    def __call__(self, batch: RewardInput) -> RewardOutput:
        return RewardOutput.single(self.name, slate_mean(self.item_scores(batch), batch.items))
