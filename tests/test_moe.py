"""The MoE layer: top-k routing, gate mixing, padding, and loss-free load balancing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moe import MoEFeedForward, routing_stats


def make_moe(experts: int = 4, active: int = 2, rate: float = 1e-3, seed: int = 0) -> MoEFeedForward:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MoEFeedForward(d_model=16, hidden=32, num_experts=experts, experts_active=active,
                              balance_update_rate=rate)


@settings(deadline=None, max_examples=15)
@given(
    experts=st.integers(2, 8),
    active_share=st.floats(0.0, 1.0),
    tokens=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_each_token_routes_to_exactly_k_distinct_experts(experts, active_share, tokens, seed):
    active = 1 + round(active_share * (experts - 1))
    moe = make_moe(experts, active, seed=seed)
    x = torch.randn(tokens, 16, generator=torch.Generator().manual_seed(seed))
    chosen, gates = moe.route(x)
    assert chosen.shape == gates.shape == (tokens, active)
    assert all(len(set(row.tolist())) == active for row in chosen)
    assert (gates > 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(tokens))
    moe(x)
    assert moe.last_stats.expert_load.sum().item() == pytest.approx(1.0)


def test_output_is_the_gate_weighted_sum_of_the_chosen_experts():
    moe = make_moe(experts=5, active=2)
    x = torch.randn(2, 7, 16)
    chosen, gates = moe.route(x.reshape(-1, 16))
    expected = torch.stack([
        sum(gates[t, j] * moe._expert(int(chosen[t, j]), token[None])[0] for j in range(2))
        for t, token in enumerate(x.reshape(-1, 16))
    ]).view(2, 7, 16)
    torch.testing.assert_close(moe(x), expected)


def test_padding_tokens_get_zeros_and_are_not_counted():
    moe = make_moe()
    x = torch.randn(3, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = True
    out = moe(x, mask)
    torch.testing.assert_close(out[~mask], torch.zeros(13, 16))
    torch.testing.assert_close(out[mask], moe(x[mask]))
    assert moe.pending_counts.sum().item() == 2 * 2 * 2  # two calls, two tokens, k = 2


def test_bias_steers_the_choice_but_not_the_gates():
    moe = make_moe(experts=4, active=2)
    x = torch.randn(10, 16)
    affinity = torch.sigmoid(moe.router(x))
    moe.routing_bias[3] = 100.0
    chosen, gates = moe.route(x)
    assert (chosen == 3).any(-1).all()
    picked = affinity.gather(-1, chosen)
    torch.testing.assert_close(gates, picked / picked.sum(-1, keepdim=True))


def test_bias_update_follows_the_sign_of_mean_minus_load():
    moe = make_moe(experts=4, active=1, rate=0.5)
    moe.pending_counts.copy_(torch.tensor([6.0, 2.0, 0.0, 0.0]))  # mean load 2
    stats = moe.update_balance()
    torch.testing.assert_close(moe.routing_bias, torch.tensor([-0.5, 0.0, 0.5, 0.5]))
    assert stats.max_over_mean.item() == pytest.approx(3.0)
    assert moe.pending_counts.sum() == 0
    assert moe.update_balance() is None  # nothing routed since


def test_eval_mode_does_not_count_load():
    moe = make_moe().eval()
    moe(torch.randn(8, 16))
    assert moe.pending_counts.sum() == 0


def skewed_balance_after_training(rate: float) -> float:
    """Route random tokens through a router that prefers expert 0; return the final balance."""
    moe = make_moe(experts=8, active=2, rate=rate)
    with torch.no_grad():
        moe.router.weight[0] += 0.5  # every token with a positive mean prefers expert 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        moe(torch.randn(64, 16, generator=generator) + 1.0)
        moe.update_balance()
    moe(torch.randn(512, 16, generator=generator) + 1.0)
    return moe.last_stats.max_over_mean.item()


def test_balancing_moves_the_load_toward_uniform():
    balanced = skewed_balance_after_training(rate=0.01)
    unbalanced = skewed_balance_after_training(rate=0.0)
    assert unbalanced > 2.5  # expert 0 takes most tokens without balancing
    assert balanced < 1.5
    assert balanced < unbalanced


def test_routing_stats_of_counts():
    stats = routing_stats(torch.tensor([3, 1, 0, 0]))
    torch.testing.assert_close(stats.expert_load, torch.tensor([0.75, 0.25, 0.0, 0.0]))
    assert stats.max_over_mean.item() == pytest.approx(3.0)


def test_gradients_reach_router_and_experts():
    moe = make_moe()
    moe(torch.randn(6, 16)).square().sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert moe.gate_up.grad.abs().sum() > 0


def test_bad_experts_active_is_rejected():
    with pytest.raises(ValueError, match="experts_active"):
        make_moe(experts=4, active=5)
