"""The OneRec encoder-decoder: training signal, log-probs, caching, checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from envs.spec import NUM_FEEDBACK, STATIC_CARDINALITIES
from policies.codec import SemanticIdCodec
from policies.config import PRESETS, OneRecConfig, config_for
from policies.decoder import DecoderCache
from policies.encoder import Context
from policies.onerec import OneRecPolicy, build_policy

NUM_ITEMS = 200
SIZES = (8, 8, 8)


def random_item_codes(num_items: int, sizes: tuple[int, ...], seed: int) -> torch.Tensor:
    """Distinct random codes (num_items, L): a stand-in for a trained codec's table."""
    flat = torch.randperm(int(np.prod(sizes)), generator=torch.Generator().manual_seed(seed))
    digits = []
    for size in reversed(sizes):
        digits.append(flat[:num_items] % size)
        flat = flat // size
    return torch.stack(digits[::-1], dim=1)


def tiny_policy(seed: int = 0, **overrides) -> OneRecPolicy:
    """The tiny preset over NUM_ITEMS items with random distinct codes."""
    config = config_for("tiny", **{"num_items": NUM_ITEMS, "codebook_sizes": SIZES, **overrides})
    policy = build_policy(config, seed)
    codec = SemanticIdCodec(random_item_codes(NUM_ITEMS, config.codebook_sizes, seed=0),
                            config.codebook_sizes)
    policy.set_item_codes(codec.item_codes)
    return policy


def full_context(batch: int, seed: int, fill: float = 0.5) -> Context:
    """All four pathways, each position holding an item with probability `fill`."""
    generator = torch.Generator().manual_seed(seed)

    def items(length: int) -> torch.Tensor:
        ids = torch.randint(0, NUM_ITEMS, (batch, length), generator=generator)
        return torch.where(torch.rand(batch, length, generator=generator) < fill, ids, -1)

    return Context(
        static=torch.stack([torch.randint(0, c, (batch,), generator=generator)
                            for c in STATIC_CARDINALITIES], dim=1),
        short_term_items=items(20),
        short_term_feedback=torch.rand(batch, 20, NUM_FEEDBACK, generator=generator) * 30,
        positive_items=items(256),
        positive_feedback=torch.rand(batch, 256, NUM_FEEDBACK, generator=generator),
        lifelong_items=items(128),
        lifelong_features=torch.rand(batch, 128, NUM_FEEDBACK + 1, generator=generator),
    )


def test_loss_goes_down_on_a_toy_mapping():
    """16 kinds of users (a history of one repeated item); the next item is a fixed function
    of it. A few dozen steps learn most of the mapping."""
    policy = tiny_policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(40):
        history = torch.randint(0, 16, (64, 1), generator=generator).repeat(1, 5)  # (B, 5)
        targets = policy.item_codes[(history[:, -1] * 7 + 3) % NUM_ITEMS]  # (B, L)
        output = policy.ntp_loss(Context.from_history(history), targets)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        policy.update_routing_balance()
        losses.append(output.loss.item())
    assert losses[0] == pytest.approx(np.log(8), abs=0.1)  # uniform over 8 codes at init
    assert np.mean(losses[-5:]) < 0.35 * losses[0]
    assert output.expert_load.shape == (2, 4)  # 2 decoder MoE layers, 4 experts
    assert torch.isfinite(output.expert_balance)


def test_ntp_loss_is_the_mean_negative_log_prob_per_code():
    policy = tiny_policy().eval()
    context = full_context(3, seed=0)
    targets = policy.item_codes[:3]  # (B, L)
    output = policy.ntp_loss(context, targets)
    log_prob = policy.log_prob(context, targets[:, None])  # (B, 1)
    assert output.loss.item() == pytest.approx(-log_prob.mean().item() / 3, rel=1e-5)
    assert output.level_losses.shape == (3,)


def test_logits_shape_and_padding_beyond_a_level_codebook():
    policy = tiny_policy(codebook_sizes=(8, 4, 7))
    targets = policy.item_codes[:2]
    logits = policy(Context.from_history(torch.tensor([[1, 2], [3, -1]])), targets)
    assert logits.shape == (2, 3, 8)
    assert torch.isneginf(logits[:, 1, 4:]).all() and torch.isneginf(logits[:, 2, 7:]).all()
    assert torch.isfinite(logits[:, 0]).all()


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    first, second, other = tiny_policy(seed=3), tiny_policy(seed=3), tiny_policy(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.decoder.heads[0].weight, other.decoder.heads[0].weight)


def test_checkpoint_round_trips_to_identical_outputs():
    policy = tiny_policy(seed=1)
    with torch.no_grad():
        for moe in policy.moe_layers():
            moe.routing_bias.uniform_(-0.1, 0.1)  # the balancing state is part of the checkpoint
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    buffer.seek(0)
    restored = build_policy(policy.config, seed=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    context, codes = full_context(4, seed=5), policy.item_codes[:4, None]  # (B, 1, L)
    policy.eval(), restored.eval()
    assert torch.equal(policy.log_prob(context, codes), restored.log_prob(context, codes))
    assert torch.equal(restored.items_from_codes(policy.item_codes), torch.arange(NUM_ITEMS))


def test_state_dict_of_another_preset_is_a_clear_error():
    policy = tiny_policy()
    other = build_policy(config_for("tiny", d_model=32, codebook_sizes=SIZES), seed=0)
    with pytest.raises(ValueError, match="same preset and overrides"):
        policy.load_state_dict(other.state_dict())
    dense = build_policy(config_for("tiny", num_items=NUM_ITEMS, codebook_sizes=SIZES,
                                    moe_in_decoder=False), seed=0)
    with pytest.raises(ValueError, match="missing"):
        policy.load_state_dict(dense.state_dict())


@pytest.mark.parametrize("session_items", [1, 2])
def test_kv_cached_decoding_matches_the_uncached_forward(session_items):
    policy = tiny_policy(session_items=session_items).eval()
    context = full_context(2, seed=6)
    group = 3  # rows per user: the cached path shares one memory copy across them
    codes = policy.item_codes[torch.randint(0, NUM_ITEMS, (2, group, session_items))]
    sequences = codes.reshape(2 * group, -1)  # (N, P)
    memory, valid = policy.encode(context)
    expanded = policy.decoder.prepare_memory(memory.repeat_interleave(group, 0),
                                             valid.repeat_interleave(group, 0))
    uncached = policy.decoder(sequences[:, :-1], expanded)  # (N, P, K_max)
    shared, cache = policy.decoder.prepare_memory(memory, valid), DecoderCache()
    for position in range(sequences.shape[1]):
        step = policy.decoder(sequences[:, :position], shared, cache)  # (N, 1, K_max)
        torch.testing.assert_close(step[:, 0], uncached[:, position], rtol=1e-5, atol=1e-5)
    assert cache.length == sequences.shape[1]
    chunked = DecoderCache()  # two positions at once, then all the rest at once
    head = policy.decoder(sequences[:, :1], shared, chunked)  # (N, 2, K_max)
    rest = policy.decoder(sequences[:, :-1], shared, chunked)  # (N, P - 2, K_max)
    torch.testing.assert_close(torch.cat([head, rest], dim=1), uncached, rtol=1e-5, atol=1e-5)


def test_empty_histories_are_allowed_and_do_not_leak_into_other_users():
    policy = tiny_policy().eval()
    context = full_context(2, seed=7)
    empty = Context(*(None if value is None else value.clone()
                      for value in dataclasses.astuple(context)))
    for name in ("short_term_items", "positive_items", "lifelong_items"):
        getattr(empty, name)[1] = -1  # user 1: nothing in any pathway
    codes = policy.item_codes[:2, None]
    both = policy.log_prob(empty, codes)
    assert torch.isfinite(both).all()
    alone = policy.log_prob(Context(*(None if v is None else v[:1]
                                      for v in dataclasses.astuple(context))), codes[:1])
    torch.testing.assert_close(both[:1], alone, rtol=1e-5, atol=1e-5)
    cold_start = policy.log_prob(Context(static=context.static), codes)  # only a static token
    assert torch.isfinite(cold_start).all()


@pytest.mark.parametrize("moe_in_encoder", [False, True])
def test_front_padding_does_not_change_outputs(moe_in_encoder):
    """Pathways are most recent last and padded in front, as the simulator builds them."""
    policy = tiny_policy(moe_in_encoder=moe_in_encoder).eval()
    history = torch.tensor([[5, 9, 11], [-1, -1, 7]])
    codes = policy.item_codes[:2, None]
    padded = torch.cat([torch.full((2, 10), -1), history], dim=1)
    torch.testing.assert_close(policy.log_prob(Context.from_history(history), codes),
                               policy.log_prob(Context.from_history(padded), codes))


def test_bf16_autocast_training_step_matches_float32():
    policy = tiny_policy(moe_in_encoder=True)
    context, targets = full_context(4, seed=10), policy.item_codes[:4]
    reference = policy.ntp_loss(context, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = policy.ntp_loss(context, targets)
    output.loss.backward()
    assert output.loss.dtype == torch.float32
    assert output.loss.item() == pytest.approx(reference.loss.item(), abs=0.05)
    assert output.expert_load.shape == (4, 4)  # 2 encoder + 2 decoder MoE layers
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_context_from_observation_batched_and_single():
    context = full_context(2, seed=8)
    observation = {name: value.numpy() for name, value in
                   zip([f.name for f in dataclasses.fields(Context)], dataclasses.astuple(context),
                       strict=True)}
    observation["user_id"] = np.arange(2)  # extra keys are ignored
    batched = Context.from_observation(observation)
    assert torch.equal(batched.positive_items, context.positive_items)
    single = Context.from_observation({key: value[0] for key, value in observation.items()})
    assert single.batch_size == 1 and single.lifelong_features.dtype == torch.float32
    policy = tiny_policy().eval()
    torch.testing.assert_close(policy.log_prob(single, policy.item_codes[:1, None]),
                               policy.log_prob(batched, policy.item_codes[:2, None])[:1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"short_term_items": torch.zeros(2, 30, dtype=torch.long),
          "short_term_feedback": None}, r"items\[:, -20:\]"),
        ({"positive_feedback": torch.zeros(2, 256, 3)}, "positive_feedback has shape"),
        ({"static": torch.zeros(2, 4, dtype=torch.long)}, "static has shape"),
        ({"static": torch.full((2, 5), 7)}, "static holds a value"),
        ({"lifelong_items": torch.full((2, 128), NUM_ITEMS)}, "lifelong_items holds ids"),
        ({"short_term_items": torch.zeros(2, 20)}, "int64"),
        ({"short_term_items": None}, "without short_term_items"),
        ({field.name: None for field in dataclasses.fields(Context)}, "holds no pathway"),
    ],
)
def test_bad_context_is_a_clear_error(change, message):
    policy = tiny_policy()
    context = dataclasses.replace(full_context(2, seed=9), **change)
    with pytest.raises(ValueError, match=message):
        policy.encode(context)


def test_bad_codes_are_clear_errors():
    policy = tiny_policy()
    context = Context.from_history(torch.tensor([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"expected \(B, L\)|expected \(B, 3\)"):
        policy.ntp_loss(context, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="level-2 code outside"):
        policy.log_prob(context, torch.tensor([[[0, 8, 0]], [[0, 0, 0]]]))
    with pytest.raises(ValueError, match="context holds 2"):
        policy.log_prob(context, torch.zeros(3, 1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="item_codes has shape"):
        policy.set_item_codes(torch.zeros(NUM_ITEMS, 2, dtype=torch.long))


def test_side_features_enter_the_item_tokens():
    policy = tiny_policy(num_creators=10, num_duration_buckets=4).eval()
    context, codes = Context.from_history(torch.tensor([[3, 4, 5]])), policy.item_codes[:1, None]
    before = policy.log_prob(context, codes)
    policy.set_item_features(creator=torch.arange(NUM_ITEMS) % 10,
                             duration_bucket=np.arange(NUM_ITEMS) % 4)
    assert not torch.equal(before, policy.log_prob(context, codes))
    with pytest.raises(ValueError, match="'category' is not enabled"):
        policy.set_item_features(category=torch.zeros(NUM_ITEMS, dtype=torch.long))
    with pytest.raises(ValueError, match=r"creator must be 200 ids in \[0, 10\)"):
        policy.set_item_features(creator=torch.full((NUM_ITEMS,), 10))


def test_item_id_input_tells_items_with_the_same_codes_apart():
    policy = tiny_policy(item_id_input=True).eval()
    plain = tiny_policy().eval()
    assert (sum(p.numel() for p in policy.parameters())
            == sum(p.numel() for p in plain.parameters()) + NUM_ITEMS * policy.config.d_model)
    policy.item_codes[4] = policy.item_codes[3]  # items 3 and 4 now share their codes
    target = policy.item_codes[:1, None]
    item_3, item_4 = (policy.log_prob(Context.from_history(torch.tensor([[item]])), target)
                      for item in (3, 4))
    assert not torch.equal(item_3, item_4)  # only the id embedding differs


def test_items_without_codes_are_rejected_until_the_table_is_set():
    policy = build_policy(config_for("tiny", num_items=NUM_ITEMS, codebook_sizes=SIZES), seed=0)
    with pytest.raises(ValueError, match="set_item_codes"):
        policy.encode(Context.from_history(torch.tensor([[1, 2]])))


def test_items_from_codes_marks_illegal_codes():
    policy = tiny_policy()
    codes = policy.item_codes[[4, 9]]
    unused = next(c for c in range(8) if not (policy.item_codes == torch.tensor([0, 0, c])).all(1).any())
    queries = torch.stack([codes[0], codes[1], torch.tensor([0, 0, unused]), torch.tensor([0, 0, 8])])
    assert policy.items_from_codes(queries).tolist() == [4, 9, -1, -1]


def test_presets_follow_table_1_and_grow():
    counts = []
    for name, (layers, width, heads, experts, active) in {
        "0.015B": (4, 128, 4, 0, 0), "0.121B": (8, 1024, 8, 0, 0),
        "0.935B": (8, 1024, 8, 24, 2), "2.633B": (24, 1024, 8, 24, 4),
    }.items():
        config = PRESETS[name]
        assert config.encoder_layers + config.decoder_layers == layers
        assert (config.d_model, config.num_heads) == (width, heads)
        assert (config.num_experts, config.experts_active) == (experts, active)
        policy = build_policy(config, seed=0, device="meta")
        counts.append(sum(p.numel() for p in policy.parameters()))
    assert counts == sorted(counts)
    assert PRESETS["0.935B"].expert_width == 2816  # (2/3) * 4 * 1024 rounded up to 128


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30}, "multiple of num_heads"),
        ({"experts_active": 5}, "experts_active"),
        ({"codebook_sizes": (8, 1)}, "codebook_sizes"),
        ({"balance_update_rate": -1.0}, "balance_update_rate"),
        ({"session_items": 0}, "session_items"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_for("tiny", **overrides)


def test_config_for_names_unknown_presets_and_fields():
    with pytest.raises(ValueError, match="choose one of"):
        config_for("huge")
    with pytest.raises(ValueError, match="unknown OneRecConfig field"):
        config_for("tiny", layers=3)
    assert isinstance(config_for("tiny", codebook_sizes=[4, 4]).codebook_sizes, tuple)
    assert OneRecConfig().num_levels == 3


def test_beauty_preset_is_tiny_without_moe():
    beauty, tiny = PRESETS["beauty"], PRESETS["tiny"]
    assert tiny.num_experts > 0 and beauty.num_experts == beauty.experts_active == 0
    assert not beauty.moe_in_decoder
    assert dataclasses.replace(beauty, num_experts=tiny.num_experts,
                               experts_active=tiny.experts_active,
                               moe_in_decoder=tiny.moe_in_decoder) == tiny
