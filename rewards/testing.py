"""The reward property kit: the contract every reward holds, checked by Hypothesis.

A reward (built-in or a plugin's) is checked on batches drawn for a small world: a synthetic
catalog, a few logged sessions whose observations serve as contexts, a semantic-ID codec and
a quickly fitted P-score. Slates hold blanks (illegal codes) and repeats; the true feedback
is zero wherever the simulator shows nothing (a blank, or a repeat of an earlier item).

    from rewards import build
    from rewards.testing import KitWorld, check_reward, reward_properties

    world = KitWorld.small(seed=0)
    results = check_reward(build("format", **world.resources()), world, max_examples=20)
    assert all(result.held for result in results), results

    # in a user's test module: one line per reward, a failure lists each broken property
    # with Hypothesis's shrunk counterexample
    test_novelty = reward_properties("novelty", plugin="my_plugin.py", bounds=(0.0, 1.0))

The contract (`CONTRACT`, one named function each): the total is a (B,) floating tensor of
finite values; the same batch twice gives the same totals; a row scored alone equals its row
in the batch; permuting the rows permutes the totals; replacing an item by a blank, or by a
copy of an earlier item of the same slate, never raises that slate's total (for a reward
reading the truth: when the replaced item's true engagement was not negative). Declared,
optional properties: `slot_order_invariant`, `monotone_in` (feedback fields), `bounds`.

A reward that declares the truth (`reads_truth`) is checked with feedback attached; any
other reward with `feedback` None, as `build` would call it.

Letters used in shape comments: B batch, S slate, L semantic-ID levels, F feedback fields.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky, Unsatisfiable

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.logging_policies import PopularPolicy
from envs.logs import LoggedSessions, collect_sessions
from envs.simulator import SessionConfig
from envs.spec import BEHAVIOURS, BLANK, FEEDBACK_FIELDS, NUM_FEEDBACK, feedback_index
from policies.codec import SemanticIdCodec
from rewards.oracle import item_engagement
from rewards.pareto import ParetoConfig
from rewards.protocol import TRUTH, RewardInput, RewardModel, shown_slots, visible_to
from rewards.pscore import PScoreConfig, PScoreModel
from rewards.pscore_train import PScoreTrainConfig, fit_pscore
from rewards.registry import NamedReward, build

DEFAULT_EXAMPLES = 30  # Hypothesis examples per property of a `reward_properties` test
TOLERANCE = 1e-5  # absolute and relative: float32 rewards batched differently may round apart
DRAW_NOTE = re.compile(r"^Draw \d+ \(")  # Hypothesis's note of a labelled draw
# Hypothesis's phases without "explain": the shrunk example is what a counterexample shows,
# and explaining it costs as much again as shrinking
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
MAX_WATCH_RATIO = 3.0  # the simulator caps watch time / duration here (envs.spec)


@dataclass(frozen=True)
class KitWorld:
    """What batches are drawn for: items, logged observations, and the resources rewards take."""

    catalog: Catalog
    logs: LoggedSessions  # contexts are the observations of its rows
    codec: SemanticIdCodec | None = None  # when given, batches carry legal and illegal codes
    pscore: PScoreModel | None = None  # offered to `build` as `pscore_model`
    context_rows: int = 256  # the first logged rows whose observations serve as contexts

    @classmethod
    def small(cls, seed: int = 0, pscore: bool = True, codec: bool = True) -> KitWorld:
        """A 200-item world with 20 logged sessions (a few seconds; cached per arguments,
        so treat it as read-only)."""
        return _small_world(seed, pscore, codec)

    def resources(self) -> dict[str, Any]:
        """The resources to pass to `rewards.build` (those this world has)."""
        offered = {"catalog": self.catalog, "codec": self.codec, "pscore_model": self.pscore}
        return {name: value for name, value in offered.items() if value is not None}

    @functools.cached_property
    def contexts(self) -> dict[str, np.ndarray]:
        """The observation of each of the first `context_rows` logged rows, each (R, ...):
        rebuilt once, then indexed (a quickstart world logs thousands of rows)."""
        return self.logs.contexts(np.arange(min(self.context_rows, self.logs.num_requests)))

    @functools.cached_property
    def illegal_codes(self) -> torch.Tensor:
        """(K, L) code tuples that name no item: unowned tuples and one out of range."""
        codec = self.codec
        if codec is None:
            raise ValueError("this world has no codec; build it with KitWorld(..., codec=...)")
        sizes = torch.tensor(codec.codebook_sizes)
        keys = torch.arange(min(int(sizes.prod()), 4096))  # the first tuples in mixed radix
        strides = torch.cat([sizes.flip(0).cumprod(0).flip(0)[1:], torch.ones(1, dtype=torch.long)])
        grid = keys[:, None] // strides % sizes  # (K', L)
        unowned = grid[codec.decode(grid) == BLANK][:3]
        out_of_range = torch.full((1, len(sizes)), -1, dtype=torch.long)
        return torch.cat([unowned, out_of_range])  # (K, L)


@functools.lru_cache(maxsize=4)
def _small_world(seed: int, with_pscore: bool, with_codec: bool) -> KitWorld:
    catalog = generate_synthetic_catalog(
        CatalogConfig(num_items=200, num_creators=20, content_dim=4), seed=seed
    )
    sessions = SessionConfig(slate_size=6, short_term_length=5, positive_length=8,
                             lifelong_history=16, lifelong_length=4)  # short pathways: fast
    logs = collect_sessions(PopularPolicy(catalog, slate_size=6, pool_size=100), catalog,
                            num_users=20, max_requests=3, seed=seed, config=sessions)
    codec = None
    if with_codec:  # distinct random 3-level codes: 200 of 512 tuples legal
        generator = torch.Generator().manual_seed(seed)
        keys = torch.randperm(8**3, generator=generator)[: catalog.num_items]  # (N,)
        codes = torch.stack([keys // 64, keys // 8 % 8, keys % 8], 1)  # (N, L)
        codec = SemanticIdCodec(codes, (8, 8, 8))
    model = None
    if with_pscore:
        config = PScoreTrainConfig(epochs=1, seed=seed, pareto=ParetoConfig(steps=2))
        small = PScoreConfig.from_catalog(catalog, embed_dim=8, hidden_dim=16, tower_dim=8)
        model = fit_pscore(logs, catalog, config, small).model.eval()
    return KitWorld(catalog, logs, codec, model)


# ---------------------------------------------------------------- strategies


@st.composite
def slates(draw: st.DrawFn, world: KitWorld, max_batch: int = 8, max_slate: int = 6
           ) -> np.ndarray:
    """(B, S) int64 item slates, B >= 1, with blanks and repeats (items from a small pool)."""
    slate = draw(st.integers(1, max_slate))
    items = st.integers(0, world.catalog.num_items - 1)
    pool = draw(st.lists(items, min_size=1, max_size=3, unique=True))  # repeats come from it
    cell = st.one_of(st.just(BLANK), st.sampled_from(pool), items)
    rows = st.lists(cell, min_size=slate, max_size=slate)  # a list of rows: shrinking drops rows
    return np.array(draw(st.lists(rows, min_size=1, max_size=max_batch)), dtype=np.int64)


def contexts(world: KitWorld, batch: int) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Observations of `batch` logged rows (repeats allowed), as the simulator gives them."""
    available = min(world.context_rows, world.logs.num_requests)
    rows = st.lists(st.integers(0, available - 1), min_size=batch, max_size=batch)
    return rows.map(lambda chosen: {key: value[chosen] for key, value in world.contexts.items()})


@st.composite
def feedback_for(draw: st.DrawFn, world: KitWorld, items: np.ndarray) -> np.ndarray:
    """(B, S, F) float32 true outcomes: watch seconds, the watch ratio they imply for the
    item's duration (capped as the simulator caps it), behaviour flags; zero where not shown."""
    shown = shown_slots(torch.as_tensor(items)).numpy()  # (B, S)
    feedback = np.zeros((*items.shape, NUM_FEEDBACK), dtype=np.float32)
    outcome = st.tuples(st.floats(0.0, 120.0, width=32),
                        st.lists(st.booleans(), min_size=len(BEHAVIOURS), max_size=len(BEHAVIOURS)))
    for row, slot in zip(*np.nonzero(shown), strict=True):
        watch, behaviours = draw(outcome)
        duration = float(world.catalog.duration_s[items[row, slot]])
        feedback[row, slot, 0] = watch
        feedback[row, slot, 1] = min(watch / duration, MAX_WATCH_RATIO)
        feedback[row, slot, 2:] = behaviours
    return feedback


@st.composite
def reward_inputs(draw: st.DrawFn, world: KitWorld, max_batch: int = 8, max_slate: int = 6,
                  feedback: bool = True, with_codes: bool | None = None) -> RewardInput:
    """Valid `RewardInput`s for `world`: slates with blanks and repeats, logged contexts,
    true feedback (when `feedback`), and codes (default: when the world has a codec) that
    are each item's code, or an illegal code at a blank."""
    items = draw(slates(world, max_batch, max_slate))
    context = draw(contexts(world, items.shape[0]))
    code_tensor = None
    if world.codec is not None if with_codes is None else with_codes:
        illegal = st.integers(0, world.illegal_codes.shape[0] - 1)
        choice = np.array(draw(st.lists(illegal, min_size=items.size, max_size=items.size)))
        code_tensor = _codes_of(world, torch.as_tensor(items), choice.reshape(items.shape))
    truth = draw(feedback_for(world, items)) if feedback else None
    return RewardInput(items=items, context=context, codes=code_tensor, feedback=truth)


def _codes_of(world: KitWorld, items: torch.Tensor, illegal: np.ndarray | None = None
              ) -> torch.Tensor:
    """(B, S, L) codes of items: the codec's code, an illegal one (`illegal` picks) at blanks."""
    codes = world.codec.encode(items.clamp(min=0))  # (B, S, L)
    picks = torch.as_tensor(np.zeros(items.shape, dtype=np.int64) if illegal is None else illegal)
    blanks = (items == BLANK)[..., None]  # (B, S, 1)
    return torch.where(blanks, world.illegal_codes[picks], codes)


# ---------------------------------------------------------------- edits of a batch


def describe(batch: RewardInput) -> str:
    """A batch in a few lines: what a counterexample shows."""
    lines = [f"items={batch.items.tolist()}"]
    if batch.codes is not None:
        lines.append(f"codes={batch.codes.tolist()}")
    if batch.feedback is not None:
        engagement = item_engagement(batch.feedback)  # (B, S)
        rounded = [[round(value, 3) for value in row] for row in engagement.tolist()]
        lines.append(f"true engagement per slot={rounded}")
    if batch.context is not None and "static" in batch.context:
        lines.append(f"context static={batch.context['static'].tolist()}")
    return "\n".join(lines)


def with_items(batch: RewardInput, items: torch.Tensor, codes: torch.Tensor | None,
               rows: torch.Tensor | None = None) -> RewardInput:
    """`batch` with new slates (and their codes) for its rows `rows` (default all, in order).

    The feedback follows the items: each shown item keeps the outcome it had in its row, now
    at its first slot in the new slate; blanks, repeats and new items get zero."""
    rows = torch.arange(batch.batch_size) if rows is None else rows
    context = None if batch.context is None else {k: v[rows] for k, v in batch.context.items()}
    feedback = None
    if batch.feedback is not None:
        old_items, old_feedback = batch.items[rows], batch.feedback[rows]  # (B, S), (B, S, F)
        old_shown, new_shown = shown_slots(old_items), shown_slots(items)
        same = (items[:, :, None] == old_items[:, None, :]) & old_shown[:, None, :]  # (B, S, S)
        feedback = torch.einsum("bij,bjf->bif", (same & new_shown[..., None]).float(),
                                old_feedback)  # (B, S, F)
    return RewardInput(items=items, context=context, codes=codes, feedback=feedback)


def _edited(world: KitWorld, batch: RewardInput, edits: list[tuple[int, int, int]]
            ) -> RewardInput:
    """`batch` followed by one row per edit (row, slot, item): that row with that slot's item
    replaced (its code too), the truth following the items (`with_items`)."""
    rows = torch.tensor([row for row, _, _ in edits], dtype=torch.long)  # (V,)
    items = batch.items[rows].clone()  # (V, S)
    for index, (_, slot, item) in enumerate(edits):
        items[index, slot] = item
    codes = None
    if batch.codes is not None:  # unedited slots keep their codes, illegal ones included
        codes = batch.codes[rows].clone()  # (V, S, L)
        for index, (_, slot, _) in enumerate(edits):
            codes[index, slot] = _codes_of(world, items[index:index + 1, slot:slot + 1])[0, 0]
        codes = torch.cat([batch.codes, codes])  # (B + V, S, L)
    everything = torch.arange(batch.batch_size)
    return with_items(batch, torch.cat([batch.items, items]), codes, torch.cat([everything, rows]))


# ---------------------------------------------------------------- properties


@dataclass(frozen=True)
class PropertyResult:
    """One property of one reward: whether it held, and the shrunk counterexample if not."""

    name: str
    held: bool
    counterexample: str | None = None  # Hypothesis's minimal failing batch and what differed


@dataclass(frozen=True)
class Check:
    """What a property sees: the reward, the world, Hypothesis's draws, the input settings."""

    reward: RewardModel
    world: KitWorld
    data: st.DataObject
    feedback: bool  # draw true feedback (the reward reads the truth)

    def batch(self, max_batch: int = 8) -> RewardInput:
        return self.data.draw(reward_inputs(self.world, max_batch, feedback=self.feedback))

    def total(self, batch: RewardInput) -> torch.Tensor:
        """The reward's (B,) totals; an input on which it breaks the output contract is
        rejected here (the contract properties report it)."""
        try:
            total = self.reward(batch).total
        except Exception:  # the output properties report it, not this one
            reject()
        if total.shape != (batch.batch_size,) or not torch.isfinite(total).all():
            reject()
        return total.detach().double()


def _raw_total(check: Check, batch: RewardInput) -> Any:
    """The reward's total before `build`'s own output check, so that a broken output is
    named by the property it breaks rather than by build's ValueError."""
    reward = check.reward
    if isinstance(reward, NamedReward):
        batch = visible_to(reward, batch)
    try:
        output = reward.reward(batch) if isinstance(reward, NamedReward) else reward(batch)
    except Exception as error:  # a reward that raises on a valid batch fails
        raise AssertionError(f"the reward raised {type(error).__name__}: {error}\n"
                             f"{describe(batch)}") from error
    return getattr(output, "total", output)


def _close(first: torch.Tensor, second: torch.Tensor, what: str, batch: RewardInput) -> None:
    if not torch.allclose(first, second, rtol=TOLERANCE, atol=TOLERANCE):
        raise AssertionError(f"{what}: {first.tolist()} != {second.tolist()}\n{describe(batch)}")


def total_shape(check: Check) -> None:
    """The total is a tensor of shape (B,)."""
    batch = check.batch()
    total = _raw_total(check, batch)
    shape = tuple(getattr(total, "shape", ()))
    if not isinstance(total, torch.Tensor) or shape != (batch.batch_size,):
        raise AssertionError(f"total is {type(total).__name__} of shape {shape}, expected "
                             f"({batch.batch_size},)\n{describe(batch)}")


def floating_dtype(check: Check) -> None:
    """The total is floating point."""
    batch = check.batch()
    total = _raw_total(check, batch)
    if not (isinstance(total, torch.Tensor) and total.dtype.is_floating_point):
        raise AssertionError(f"total has dtype {getattr(total, 'dtype', type(total))}\n"
                             f"{describe(batch)}")


def finite(check: Check) -> None:
    """Every total is finite (no NaN, no infinity)."""
    batch = check.batch()
    total = torch.as_tensor(_raw_total(check, batch))
    if not torch.isfinite(total).all():
        raise AssertionError(f"total={total.tolist()}\n{describe(batch)}")


def deterministic(check: Check) -> None:
    """The same batch twice gives the same totals."""
    batch = check.batch()
    first, second = check.total(batch), check.total(batch)
    if not torch.equal(first, second):
        raise AssertionError(f"two calls differ: {first.tolist()} != {second.tolist()}\n"
                             f"{describe(batch)}")


def row_alone_equals_row_in_batch(check: Check) -> None:
    """A slate scored alone gets the total it gets inside the batch."""
    batch = check.batch()
    row = check.data.draw(st.integers(0, batch.batch_size - 1), label="row")
    alone = with_items(batch, batch.items[row:row + 1],
                       None if batch.codes is None else batch.codes[row:row + 1],
                       torch.tensor([row]))
    _close(check.total(alone), check.total(batch)[row:row + 1],
           f"row {row} alone vs in the batch", batch)


def row_permutation_equivariant(check: Check) -> None:
    """Permuting the rows of a batch permutes its totals."""
    batch = check.batch()
    order = torch.tensor(check.data.draw(st.permutations(range(batch.batch_size)), label="order"))
    permuted = with_items(batch, batch.items[order],
                          None if batch.codes is None else batch.codes[order], order)
    _close(check.total(permuted), check.total(batch)[order],
           f"rows permuted by {order.tolist()}", batch)


def _replaceable_slots(batch: RewardInput) -> list[tuple[int, int]]:
    """Slots holding an item whose true engagement (if known) is not negative: removing a
    hated item may rightly raise the truth."""
    allowed = batch.items != BLANK  # (B, S)
    if batch.feedback is not None:
        allowed &= item_engagement(batch.feedback) >= 0
    return [tuple(slot) for slot in torch.nonzero(allowed).tolist()]


def _never_raises(check: Check, batch: RewardInput, edits: list[tuple[int, int, int]],
                  what: str) -> None:
    """Each edited row scores at most its original; both are scored in one call, so that a
    reward's dependence on the batch (reported elsewhere) cannot be mistaken for this."""
    if not edits:
        reject()
    total = check.total(_edited(check.world, batch, edits))  # (B + V,)
    before = total[[row for row, _, _ in edits]]  # (V,)
    after = total[batch.batch_size:]  # (V,)
    raised = after > before + TOLERANCE * (1 + before.abs())
    if raised.any():
        index = int(torch.nonzero(raised)[0])
        row, slot, item = edits[index]
        raise AssertionError(f"{what.format(item=item)} at slot ({row}, {slot}) raised the "
                             f"total from {float(before[index])} to {float(after[index])}\n"
                             f"{describe(batch)}")


def blank_never_raises(check: Check) -> None:
    """Replacing an item by a blank (an illegal code) never raises its slate's total."""
    batch = check.batch()
    edits = [(row, slot, BLANK) for row, slot in _replaceable_slots(batch)]
    _never_raises(check, batch, edits, "a blank")


def repeat_never_raises(check: Check) -> None:
    """Replacing an item by a copy of an earlier item of the same slate never raises it."""
    batch = check.batch()
    items = batch.items.tolist()
    edits = [(row, slot, copy) for row, slot in _replaceable_slots(batch)
             for copy in dict.fromkeys(items[row][:slot]) if copy not in (BLANK, items[row][slot])]
    _never_raises(check, batch, edits, "a copy of item {item}")


CONTRACT: tuple[Callable[[Check], None], ...] = (
    total_shape, floating_dtype, finite, deterministic, row_alone_equals_row_in_batch,
    row_permutation_equivariant, blank_never_raises, repeat_never_raises,
)


def slot_order_invariance(check: Check) -> None:
    """Declared: permuting the slots of a slate leaves its total unchanged."""
    batch = check.batch()
    order = torch.tensor(check.data.draw(st.permutations(range(batch.items.shape[1])),
                                         label="slot order"))
    shuffled = with_items(batch, batch.items[:, order],
                          None if batch.codes is None else batch.codes[:, order])
    _close(check.total(shuffled), check.total(batch), f"slots permuted by {order.tolist()}", batch)


def monotonicity(fields: Sequence[str]) -> Callable[[Check], None]:
    """Declared: raising one of `fields` at a shown slot never lowers the total."""
    columns = [feedback_index(name) for name in fields]

    def monotone(check: Check) -> None:
        batch = check.batch()
        if batch.feedback is None:
            reject()
        slots = torch.nonzero(batch.shown).tolist()
        if not slots:
            reject()
        row, slot = check.data.draw(st.sampled_from(slots), label="slot")
        column = check.data.draw(st.sampled_from(columns), label="field")
        raised = batch.feedback.clone()
        if column < 2:  # watch seconds or ratio: any increase (the ratio within its cap)
            step = check.data.draw(st.floats(0.01, 60.0), label="increase")
            cap = MAX_WATCH_RATIO if column == 1 else float("inf")
            raised[row, slot, column] = (raised[row, slot, column] + step).clamp(max=cap)
        else:  # a behaviour flag: it happens
            raised[row, slot, column] = 1.0
        higher = RewardInput(items=batch.items, context=batch.context, codes=batch.codes,
                             feedback=raised)
        before, after = check.total(batch)[row], check.total(higher)[row]
        if after < before - TOLERANCE * (1 + abs(before)):
            raise AssertionError(f"raising {FEEDBACK_FIELDS[column]} at ({row}, {slot}) lowered "
                                 f"the total from {float(before)} to {float(after)}\n"
                                 f"{describe(batch)}")

    monotone.__name__ = f"monotone_in_{'_'.join(fields)}"
    return monotone


def bounded(lower: float, upper: float) -> Callable[[Check], None]:
    """Declared: every total lies in [lower, upper]."""

    def bounds(check: Check) -> None:
        batch = check.batch()
        total = check.total(batch)
        if ((total < lower) | (total > upper)).any():
            raise AssertionError(f"total={total.tolist()} leaves [{lower}, {upper}]\n"
                                 f"{describe(batch)}")

    bounds.__name__ = f"bounds_{lower:g}_{upper:g}"
    return bounds


# ---------------------------------------------------------------- running


def check_reward(reward: RewardModel, world: KitWorld, *, max_examples: int = 50, seed: int = 0,
                 slot_order_invariant: bool = False, monotone_in: Sequence[str] = (),
                 bounds: tuple[float, float] | None = None) -> list[PropertyResult]:
    """Run `CONTRACT` and the declared properties on `reward`; one result per property."""
    unknown = [name for name in monotone_in if name not in FEEDBACK_FIELDS]
    if unknown:
        raise ValueError(f"monotone_in names {unknown}; choose from {FEEDBACK_FIELDS}")
    reads_truth = TRUTH in getattr(reward, "requires", ())
    if monotone_in and not reads_truth:
        raise ValueError(
            f"monotone_in={tuple(monotone_in)} is about the truth, which reward "
            f"{getattr(reward, 'name', reward)!r} does not read; declare it only for a reward "
            "registered with requires=('feedback',)"
        )
    properties = list(CONTRACT)
    if slot_order_invariant:
        properties.append(slot_order_invariance)
    if monotone_in:
        properties.append(monotonicity(tuple(monotone_in)))
    if bounds is not None:
        properties.append(bounded(*bounds))
    return [_run(prop, reward, world, reads_truth, max_examples, seed) for prop in properties]


def _run(prop: Callable[[Check], None], reward: RewardModel, world: KitWorld, feedback: bool,
         max_examples: int, seed: int) -> PropertyResult:
    @hypothesis_seed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=PHASES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        prop(Check(reward, world, data, feedback))

    try:
        run()
    except Unsatisfiable:
        return PropertyResult(prop.__name__, False,
                              "no batch could be checked: the reward broke the output contract "
                              "(total_shape, floating_dtype, finite) on every one drawn")
    except (AssertionError, Flaky) as failure:
        # Hypothesis notes the shrunk example's labelled draws (row, slot, ...); the batch
        # itself is in the message, described compactly
        draws = [note for note in getattr(failure, "__notes__", ()) if DRAW_NOTE.match(note)]
        return PropertyResult(prop.__name__, False, "\n".join([str(failure), *draws]))
    return PropertyResult(prop.__name__, True)


def failures_report(results: Sequence[PropertyResult]) -> str:
    """The failed properties and their counterexamples, one block each."""
    return "\n\n".join(f"{result.name} failed:\n{result.counterexample}"
                       for result in results if not result.held)


def reward_properties(spec: str, plugin: str | None = None, *, seed: int = 0,
                      max_examples: int = DEFAULT_EXAMPLES, **declared: Any
                      ) -> Callable[[], None]:
    """A test function checking the reward `spec` (after loading `plugin`) on
    `KitWorld.small(seed)`: assign it in a test module, `test_mine = reward_properties("mine")`.
    `declared` are `check_reward`'s optional properties. pytest's `--reward-examples` and
    `--reward-seed` (the lab's pytest plugin) override `max_examples` and `seed`."""

    def test_reward_properties() -> None:
        from onerec_lab.pytest_plugin import overridden

        if plugin is not None:
            from onerec_lab.experiment.plugins import load_plugins

            load_plugins([plugin], environment=False, entry_points=False)
        drawn_seed = overridden("seed", seed)
        world = KitWorld.small(drawn_seed)
        reward = build(spec, **world.resources())
        results = check_reward(reward, world, max_examples=overridden("max_examples", max_examples),
                               seed=drawn_seed, **declared)
        failed = [result for result in results if not result.held]
        if failed:  # raised, not asserted: pytest would rewrite an assert's message
            raise AssertionError(f"reward {spec!r} broke {len(failed)} propert"
                                 f"{'y' if len(failed) == 1 else 'ies'}:\n\n"
                                 f"{failures_report(results)}")

    test_reward_properties.__name__ = f"test_reward_properties_{spec}"
    return test_reward_properties
