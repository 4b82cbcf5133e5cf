"""The decoder's learned repeat bias: which codes continue a history item, and what it learns."""

from __future__ import annotations

import pytest
import torch

from policies.encoder import Context
from policies.generation import beam_search, sample
from policies.repeat import CatalogPrefixes, RepeatMarks
from tests.test_generation import policy_and_codec
from tests.test_onerec_model import NUM_ITEMS, full_context


def test_marks_continue_and_commit_to_history_items():
    catalog = CatalogPrefixes(
        torch.tensor([[1, 2, 3], [1, 2, 4], [1, 4, 0], [5, 5, 5], [2, 0, 0]]), (6, 6, 6)
    )
    history = torch.tensor([
        [[1, 2, 3], [1, 4, 0], [-1, -1, -1]],  # user 0: two items and a padding slot
        [[5, 5, 5], [-1, -1, -1], [-1, -1, -1]],  # user 1: one item
    ])  # (B=2, T=3, L=3)
    repeats = RepeatMarks(history, catalog)
    first = repeats.marks(torch.zeros(4, 0, dtype=torch.long))  # G = 2 rows per user
    # user 0: code 1 leads to both its items but also to (1, 2, 4): continues, not commits
    assert first[:2].tolist() == [[[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]] * 2
    assert first[2:].tolist() == [[[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1]]] * 2
    second = repeats.marks(torch.tensor([[1], [2], [5], [1]]))
    assert second[0].tolist() == [[0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 1, 0]]  # (1, 4) is all his
    assert second[1].sum() == 0  # no history item starts with 2
    assert second[2].tolist() == [[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1]]
    assert second[3].sum() == 0  # user 1 has no item starting with 1: rows do not mix users
    last = repeats.marks(torch.tensor([[1, 2], [1, 4]]))  # G = 1: row 1 is user 1
    assert last.tolist() == [[[0, 0, 0, 1, 0, 0]] * 2, [[0] * 6] * 2]


def test_catalog_counts_items_under_each_prefix():
    codes = torch.tensor([[0, 1], [0, 1], [0, 2], [3, 0]])
    catalog = CatalogPrefixes(codes, (4, 3))
    assert catalog.count_children(torch.zeros(1, 0, dtype=torch.long)).tolist() == [[3, 0, 0, 1]]
    assert catalog.count_children(torch.tensor([[0], [3], [1]])).tolist() == [
        [0, 2, 1], [1, 0, 0], [0, 0, 0]
    ]


def test_a_zero_repeat_bias_changes_nothing():
    plain, _ = policy_and_codec()
    biased, _ = policy_and_codec(repeat_bias=True)
    context = full_context(3, seed=4)
    codes = plain.item_codes[:6].view(3, 2, -1)  # (B, G, L)
    torch.testing.assert_close(biased.log_prob(context, codes), plain.log_prob(context, codes))


@pytest.mark.parametrize("method", ["beam", "sample"])
def test_generation_reports_the_biased_log_probs_and_avoids_history(method):
    policy, codec = policy_and_codec(repeat_bias=True)
    with torch.no_grad():
        policy.decoder.repeat_bias.copy_(torch.tensor([[0.5, 0.0, 0.0], [-30.0] * 3]))
    context = full_context(3, seed=5, fill=0.05)  # ~20 of the 200 items per user
    if method == "beam":
        result = beam_search(policy, context, beam_size=16, constraint=codec)
    else:
        result = sample(policy, context, num_samples=16, constraint=codec,
                        generator=torch.Generator().manual_seed(0))
    teacher_forced = policy.token_log_probs(context, result.codes, codec)
    torch.testing.assert_close(result.token_log_probs, teacher_forced, rtol=1e-5, atol=1e-5)
    for user in range(3):
        history = {int(i) for pathway in (context.short_term_items, context.positive_items,
                                          context.lifelong_items) for i in pathway[user] if i >= 0}
        assert not history & set(result.items[user].tolist())
    plain = policy_and_codec()[0]  # the same weights without the bias do repeat history items
    unbiased = beam_search(plain, context, beam_size=16, constraint=codec).items
    history = torch.cat([context.short_term_items, context.positive_items,
                         context.lifelong_items], dim=1)  # (B, T)
    assert (unbiased[:, :, None] == history[:, None, :]).any()


@pytest.mark.parametrize("repeats", [False, True])
def test_the_bias_learns_from_data_whether_users_repeat(repeats):
    """Targets that are never in the history push the last level's bias down; targets that
    are always the most recent history item push it up."""
    policy, _ = policy_and_codec(repeat_bias=True)
    policy.train()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    for _ in range(15):
        history = torch.randint(0, NUM_ITEMS, (32, 5), generator=generator)  # (B, 5)
        fresh = (history.max(1).values + 1 + torch.randint(0, 5, (32,), generator=generator))
        target = history[:, -1] if repeats else fresh % NUM_ITEMS
        if not repeats:  # keep only rows whose target is really not in the history
            keep = (history != target[:, None]).all(1)
            history, target = history[keep], target[keep]
        loss = policy.ntp_loss(Context.from_history(history), policy.item_codes[target]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    commits = policy.decoder.repeat_bias.detach()[1, -1]  # the last code always commits
    assert (commits > 0.05) if repeats else (commits < -0.05)


def test_a_memory_without_history_codes_is_a_clear_error():
    policy, _ = policy_and_codec(repeat_bias=True)
    memory, valid = policy.encode(full_context(1, seed=0))
    with pytest.raises(ValueError, match="decoder_memory"):
        policy.decoder.prepare_memory(memory, valid)


def test_history_codes_cover_every_item_pathway_with_padding():
    policy, _ = policy_and_codec(repeat_bias=True)
    context = full_context(2, seed=7)
    codes = policy.history_codes(context)  # (B, T, L)
    assert codes.shape == (2, 20 + 256 + 128, 3)
    items = torch.cat([context.short_term_items, context.positive_items,
                       context.lifelong_items], dim=1)
    for user in range(2):
        present = codes[user][(codes[user] >= 0).all(-1)]  # (distinct items, L)
        expected = policy.item_codes[items[user][items[user] >= 0].unique()]
        assert sorted(present.tolist()) == sorted(expected.tolist())
    assert policy.history_codes(Context(static=context.static)).shape == (2, 0, 3)


def test_a_checkpoint_keeps_the_learned_bias_and_a_plain_policy_refuses_it(tmp_path):
    policy, _ = policy_and_codec(repeat_bias=True)
    with torch.no_grad():
        policy.decoder.repeat_bias.copy_(torch.tensor([[0.3, -0.2, 0.1], [0.0, -1.5, -4.0]]))
    torch.save(policy.state_dict(), tmp_path / "policy.pt")
    state = torch.load(tmp_path / "policy.pt", weights_only=True)
    restored, _ = policy_and_codec(repeat_bias=True, seed=1)  # other weights until loaded
    restored.load_state_dict(state)
    context = full_context(2, seed=8, fill=0.05)
    codes = policy.item_codes[:8].view(2, 4, -1)
    torch.testing.assert_close(restored.log_prob(context, codes), policy.log_prob(context, codes))
    plain, _ = policy_and_codec()
    with pytest.raises(ValueError, match="unexpected decoder.repeat_bias"):
        plain.load_state_dict(state)
