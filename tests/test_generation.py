"""Beam search and sampling: reported log-probs, ordering, legality, reproducibility."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.codec import SemanticIdCodec
from policies.config import config_for
from policies.encoder import Context
from policies.generation import beam_search, sample
from policies.onerec import OneRecPolicy, build_policy
from tests.test_onerec_model import NUM_ITEMS, SIZES, full_context, random_item_codes


def policy_and_codec(
    sizes: tuple[int, ...] = SIZES, num_items: int = NUM_ITEMS, seed: int = 0, **overrides
) -> tuple[OneRecPolicy, SemanticIdCodec]:
    codec = SemanticIdCodec(random_item_codes(num_items, sizes, seed), sizes)
    config = config_for("tiny", num_items=num_items, codebook_sizes=sizes, **overrides)
    policy = build_policy(config, seed).eval()
    policy.set_item_codes(codec.item_codes)
    return policy, codec


@pytest.fixture(scope="module")
def setup() -> tuple[OneRecPolicy, SemanticIdCodec]:
    return policy_and_codec()


def all_code_sequences(sizes: tuple[int, ...]) -> torch.Tensor:
    """Every code tuple (prod(sizes), L), in mixed-radix order."""
    return torch.cartesian_prod(*(torch.arange(size) for size in sizes))


@pytest.mark.parametrize("method", ["beam", "sample"])
@pytest.mark.parametrize("constrained", [False, True])
def test_reported_log_probs_equal_teacher_forced_log_prob(setup, method, constrained):
    policy, codec = setup
    constraint = codec if constrained else None
    context = full_context(3, seed=1)
    if method == "beam":
        result = beam_search(policy, context, beam_size=16, constraint=constraint)
    else:
        result = sample(policy, context, num_samples=16, temperature=1.5, top_k=5, top_p=0.9,
                        generator=torch.Generator().manual_seed(0), constraint=constraint)
    assert result.codes.shape == (3, 16, 3) and result.items.shape == (3, 16)
    torch.testing.assert_close(result.log_probs, result.token_log_probs.sum(-1))
    teacher_forced = policy.token_log_probs(context, result.codes, constraint)
    torch.testing.assert_close(result.token_log_probs, teacher_forced, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.items, codec.decode(result.codes))


@pytest.mark.parametrize("constrained", [False, True])
def test_beam_search_returns_the_exact_top_k_in_order(setup, constrained):
    """With 64 beams over 8 x 8 x 8 codes every 2-code prefix survives, so the search is
    exact: it must return the 64 best sequences of an exhaustive enumeration, best first."""
    policy, codec = setup
    constraint = codec if constrained else None
    context = full_context(2, seed=2)
    result = beam_search(policy, context, beam_size=64, constraint=constraint)
    candidates = codec.item_codes if constrained else all_code_sequences(SIZES)  # (C, L)
    exhaustive = policy.log_prob(context, candidates.expand(2, -1, -1), constraint)  # (B, C)
    best = exhaustive.topk(64, dim=1)
    torch.testing.assert_close(result.log_probs, best.values, rtol=1e-5, atol=1e-5)
    assert (result.log_probs[:, 1:] <= result.log_probs[:, :-1]).all()
    for user in range(2):
        assert len({tuple(codes) for codes in result.codes[user].tolist()}) == 64
    if constrained:
        assert (result.items >= 0).all()
        assert all(len(set(row)) == 64 for row in result.items.tolist())


def test_more_beams_than_legal_items_fill_the_tail_with_blanks():
    policy, codec = policy_and_codec(sizes=(4, 4), num_items=10)
    result = beam_search(policy, full_context(2, seed=3, fill=0.0), beam_size=12, constraint=codec)
    assert sorted(result.items[0, :10].tolist()) == list(range(10))
    assert (result.items[:, 10:] == -1).all() and torch.isneginf(result.log_probs[:, 10:]).all()
    assert torch.isfinite(result.log_probs[:, :10]).all()


@settings(deadline=None, max_examples=12)
@given(
    sizes=st.lists(st.integers(2, 6), min_size=2, max_size=3).map(tuple),
    share=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
    width=st.integers(1, 24),
    temperature=st.floats(0.3, 3.0),
)
def test_constrained_generation_never_yields_an_illegal_code(sizes, share, seed, width,
                                                             temperature):
    num_items = max(1, int(share * math.prod(sizes)))
    policy, codec = policy_and_codec(sizes=sizes, num_items=num_items, seed=seed)
    history = torch.randint(-1, num_items, (2, 6), generator=torch.Generator().manual_seed(seed))
    context = Context.from_history(history)
    sampled = sample(policy, context, width, temperature=temperature,
                     generator=torch.Generator().manual_seed(seed), constraint=codec)
    assert codec.is_legal(sampled.codes).all()
    beams = beam_search(policy, context, min(width, math.prod(sizes)), constraint=codec)
    legal = codec.is_legal(beams.codes)
    assert legal[:, : min(width, num_items)].all()  # only a surplus of beams may be illegal
    assert torch.isneginf(beams.log_probs[~legal]).all()


def test_sampling_is_reproducible_and_follows_the_model(setup):
    policy, _ = setup
    context = full_context(1, seed=4)
    first = sample(policy, context, 2000, generator=torch.Generator().manual_seed(7))
    again = sample(policy, context, 2000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first.codes, again.codes)
    frequency = torch.bincount(first.codes[0, :, 0], minlength=8) / 2000
    first_codes = torch.stack([torch.arange(8), torch.zeros(8, dtype=torch.long),
                               torch.zeros(8, dtype=torch.long)], dim=1)  # (8, L)
    model = policy.token_log_probs(context, first_codes[None])[0, :, 0].exp()  # p(c_1)
    torch.testing.assert_close(frequency, model, atol=0.04, rtol=0.0)  # ~3.5 std of a share


@pytest.mark.parametrize("truncation", [{"top_k": 1}, {"top_p": 1e-6}])
def test_truncated_sampling_to_one_code_is_greedy(setup, truncation):
    policy, _ = setup
    context = full_context(3, seed=5)
    greedy = beam_search(policy, context, beam_size=1)
    sampled = sample(policy, context, 4, generator=torch.Generator().manual_seed(0), **truncation)
    assert torch.equal(sampled.codes, greedy.codes.expand(-1, 4, -1))


@pytest.mark.parametrize("generate", [
    lambda policy, context: beam_search(policy, context, 8),
    lambda policy, context: sample(policy, context, 8),
])
def test_encoder_runs_once_per_batch_of_users(setup, generate):
    policy, _ = setup
    with mock.patch.object(policy, "encode", wraps=policy.encode) as encode:
        generate(policy, full_context(3, seed=6))
    assert encode.call_count == 1


def test_session_wise_generation():
    policy, codec = policy_and_codec(session_items=2)
    context = full_context(2, seed=7)
    for result in (beam_search(policy, context, 6, constraint=codec),
                   sample(policy, context, 6, generator=torch.Generator().manual_seed(1),
                          constraint=codec)):
        assert result.codes.shape == (2, 6, 2, 3) and result.items.shape == (2, 6, 2)
        assert (result.items >= 0).all()
        torch.testing.assert_close(result.log_probs, policy.log_prob(context, result.codes, codec),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, c: beam_search(p, c, 0), "beam_size"),
        (lambda p, c: beam_search(p, c, 513), "beam_size"),
        (lambda p, c: sample(p, c, 0), "num_samples"),
        (lambda p, c: sample(p, c, 4, temperature=0.0), "beam_search for greedy"),
        (lambda p, c: sample(p, c, 4, top_k=0), "top_k"),
        (lambda p, c: sample(p, c, 4, top_p=0.0), "top_p"),
        (lambda p, c: beam_search(p, c, 4, constraint=SemanticIdCodec(
            random_item_codes(50, (8, 8, 4), seed=0), (8, 8, 4))), "codebook_sizes must match"),
    ],
)
def test_bad_generation_arguments_are_clear_errors(setup, call, message):
    policy, _ = setup
    with pytest.raises(ValueError, match=message):
        call(policy, full_context(1, seed=8))
