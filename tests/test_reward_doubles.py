"""Test doubles for the reward tests, and tests that the doubles keep their contracts.

- `make_codec`: a real `policies.codec.SemanticIdCodec` for a small catalog, each item on a
  random distinct code tuple, so most code tuples are illegal.
- `FakeLogs`: logged sessions of a tiny world whose answer is known (the `envs.logs`
  interface the P-score reads: `num_requests`, `slates`, `feedback`, `contexts(rows)`). Users
  click items close to their taste (and click-bait), watch good items long, like some of
  those, and hate click-bait of low quality; each request's history is drawn from the same
  rules, so a model that attends over it can learn every behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.spec import BLANK, FEEDBACK_FIELDS, NUM_FEEDBACK, STATIC_CARDINALITIES
from policies.codec import SemanticIdCodec


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Reward tests use tiny tensors: extra threads only contend for the shared cores
    (25x slower under load). Import this fixture into a test module to apply it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_codec(
    num_items: int, levels: int = 3, codebook_size: int = 8, seed: int = 0
) -> SemanticIdCodec:
    """A real codec whose items own distinct random codes; most code tuples stay illegal."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(codebook_size**levels, size=num_items, replace=False)
    powers = codebook_size ** np.arange(levels - 1, -1, -1)
    codes = (keys[:, None] // powers) % codebook_size  # (N, L)
    return SemanticIdCodec(torch.as_tensor(codes), (codebook_size,) * levels)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class FakeLogs:
    """Logged sessions of a known world: (R, S) slates, (R, S, F) feedback, contexts."""

    def __init__(
        self,
        num_requests: int = 1500,
        slate_size: int = 6,
        num_items: int = 300,
        short_term: int = 8,
        positive: int = 12,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.catalog: Catalog = generate_synthetic_catalog(
            CatalogConfig(
                num_items=num_items,
                num_creators=max(2, num_items // 10),
                content_dim=16,
                content_noise=0.1,
            ),
            seed=seed,
        )
        num_users = max(2, num_requests // 5)
        taste = self.catalog.topics[rng.integers(0, num_items, size=num_users)]
        self.taste = taste + 0.3 * rng.normal(size=taste.shape)
        self.num_requests = num_requests
        users = rng.integers(0, num_users, size=num_requests)
        self.users = users
        self.static = np.stack(
            [rng.integers(0, size, size=num_users) for size in STATIC_CARDINALITIES], axis=1
        )[users]
        shown = rng.choice(
            num_items, size=(num_requests, slate_size + short_term), p=self.catalog.popularity
        )
        self.slates = shown[:, :slate_size].astype(np.int64)
        self.feedback = self.respond(users[:, None], self.slates, rng)
        self.short_term_items = shown[:, slate_size:].astype(np.int64)
        self.short_term_feedback = self.respond(users[:, None], self.short_term_items, rng)
        # positives: the items of highest affinity among a random pool, as if engaged before
        pool = rng.integers(0, num_items, size=(num_requests, 4 * positive))
        affinity = self.affinity(users[:, None], pool)
        best = np.argsort(-affinity, axis=1)[:, :positive]
        self.positive_items = np.take_along_axis(pool, best, 1).astype(np.int64)
        self.positive_items[:, positive - 2 :] = BLANK  # padding, as in real pathways
        self.positive_feedback = self.respond(users[:, None], self.positive_items.clip(0), rng)
        self.positive_feedback[self.positive_items == BLANK] = 0.0

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (self.taste[users] * self.catalog.topics[items]).sum(-1)

    def respond(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Feedback (..., F) of users to items, in FEEDBACK_FIELDS order."""
        affinity = self.affinity(users, items)
        quality, bait = self.catalog.quality[items], self.catalog.clickbait[items]
        click = rng.random(items.shape) < _sigmoid(3.0 * affinity + 3.0 * bait - 1.0)
        satisfaction = _sigmoid(4.0 * affinity + 4.0 * (quality - 0.5) - 0.5)
        long_view = click & (rng.random(items.shape) < satisfaction)
        like = long_view & (rng.random(items.shape) < 0.6 * satisfaction)
        follow = long_view & (rng.random(items.shape) < 0.3 * satisfaction)
        comment = click & (rng.random(items.shape) < 0.3 * satisfaction)
        forward = like & (rng.random(items.shape) < 0.5)
        hate = click & (rng.random(items.shape) < 0.8 * bait * (1 - quality))
        ratio = np.where(click, 0.1 + 1.5 * satisfaction * rng.random(items.shape), 0.0)
        feedback = np.zeros((*items.shape, NUM_FEEDBACK), dtype=np.float32)
        feedback[..., 0] = ratio * self.catalog.duration_s[items]
        feedback[..., 1] = ratio
        for column, flag in enumerate((click, long_view, like, follow, comment, forward, hate), 2):
            feedback[..., column] = flag
        return feedback

    def contexts(self, row_indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.asarray(row_indices)
        return {
            "static": self.static[rows],
            "short_term_items": self.short_term_items[rows],
            "short_term_feedback": self.short_term_feedback[rows],
            "positive_items": self.positive_items[rows],
            "positive_feedback": self.positive_feedback[rows],
        }


def test_made_codec_round_trips_items_and_rejects_codes_outside_the_catalog() -> None:
    codec = make_codec(num_items=300)
    items = torch.arange(300)
    torch.testing.assert_close(codec.decode(codec.encode(items)), items)
    assert not codec.is_legal(torch.tensor([[[0, -1, 0]]])).any()
    assert (~codec.is_legal(torch.cartesian_prod(*[torch.arange(8)] * 3))).sum() == 512 - 300


def test_fake_logs_follow_the_contract_and_the_known_rules() -> None:
    logs = FakeLogs(num_requests=200, seed=1)
    assert logs.slates.shape == (200, 6) and logs.feedback.shape == (200, 6, NUM_FEEDBACK)
    context = logs.contexts(np.array([0, 5]))
    assert all(value.shape[0] == 2 for value in context.values())
    click = logs.feedback[..., FEEDBACK_FIELDS.index("click")] > 0
    long_view = logs.feedback[..., FEEDBACK_FIELDS.index("long_view")] > 0
    assert 0.1 < click.mean() < 0.9
    assert not (long_view & ~click).any(), "a long view needs a click in the fake world"
