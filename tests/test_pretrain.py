"""Pre-training: the schedule, the examples, the sampler, and runs that learn, repeat and resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.logging_policies import PopularPolicy
from envs.logs import LoggedSessions, collect_sessions
from envs.simulator import SessionConfig
from envs.spec import FEEDBACK_FIELDS
from envs.users import PopulationConfig
from policies.codec import SemanticIdCodec
from policies.config import config_for
from policies.encoder import Context
from policies.onerec import OneRecPolicy, build_policy
from tests.test_checkpoint import as_version_1
from trainers.checkpoint import read_checkpoint, training_metadata
from trainers.pretrain import CHECKPOINT_FILE, PretrainConfig, load_policy, pretrain
from trainers.pretrain_data import (
    BatchSampler,
    HistoryExamples,
    LoggedExamples,
    QualityFilter,
    positive_sequences,
)
from trainers.schedule import warmup_cosine_factor, warmup_cosine_schedule

ITEMS = 400
# Short pathways keep a CPU step at a few tens of milliseconds.
SESSIONS = SessionConfig(positive_length=24, lifelong_history=48, lifelong_length=12,
                         population=PopulationConfig(warm_history=80))
FAST = {"per_device_train_batch_size": 8, "warmup_steps": 2, "learning_rate": 3e-3}


def small_logs(num_users: int = 40, seed: int = 0) -> LoggedSessions:
    """Logged sessions of a popular-items policy over a 400-item synthetic catalog."""
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=ITEMS, num_creators=40), seed=1)
    policy = PopularPolicy(catalog, pool_size=200)
    return collect_sessions(policy, catalog, num_users=num_users, max_requests=4, seed=seed,
                            config=SESSIONS)


def random_codec(num_items: int = ITEMS, codebook: int = 8, seed: int = 0) -> SemanticIdCodec:
    """Distinct random 3-level codes: enough to exercise training, with no tokenizer to fit."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randperm(codebook**3, generator=generator)[:num_items]  # (N,) no collisions
    codes = torch.stack([keys // codebook**2, keys // codebook % codebook, keys % codebook], 1)
    return SemanticIdCodec(codes, (codebook,) * 3)


def small_policy(
    codec: SemanticIdCodec, seed: int = 0, preset: str = "tiny", **overrides: object
) -> OneRecPolicy:
    """A preset (tiny: with its MoE decoder) sized for the small logs."""
    config = config_for(
        preset, num_items=codec.num_items, codebook_sizes=codec.codebook_sizes,
        positive_length=SESSIONS.positive_length, lifelong_length=SESSIONS.lifelong_length,
        lifelong_queries=4, **overrides,
    )
    policy = build_policy(config, seed=seed)
    policy.set_item_codes(codec.item_codes)
    return policy


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor() -> None:
    # W = 2, T = 6, r = 0.1: (s + 1) / 2 during warm-up, then 0.1 + 0.9 (1 + cos(pi p)) / 2.
    factors = [warmup_cosine_factor(step, 2, 6, 0.1) for step in range(8)]
    expected = [0.5, 1.0, 1.0, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, 0.55,
                0.1 + 0.9 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.1, 0.1]
    assert factors == pytest.approx(expected)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine_schedule(optimizer, 2, 6, 0.1)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2 * f for f in expected[:4]])
    with pytest.raises(ValueError, match="min_lr_rate"):
        warmup_cosine_schedule(optimizer, 2, 6, 1.5)


def test_quality_filter_selects_shown_engaged_exposures_by_hand() -> None:
    feedback = np.zeros((1, 5, len(FEEDBACK_FIELDS)), dtype=np.float32)
    column = FEEDBACK_FIELDS.index
    feedback[0, 0, column("like")] = 1  # engaged
    feedback[0, 1, column("like")] = 1  # engaged but hated
    feedback[0, 1, column("hate")] = 1
    feedback[0, 2, column("click")] = 1  # a click alone is not high quality
    feedback[0, 3, column("forward")] = 1  # engaged but not shown
    feedback[0, 4, column("long_view")] = 1  # engaged, watched 0.8 of the video
    feedback[0, :, column("watch_ratio")] = [2.0, 2.0, 2.0, 2.0, 0.8]
    shown = np.array([[True, True, True, False, True]])
    assert QualityFilter().select(feedback, shown).tolist() == [[True, False, False, False, True]]
    stricter = QualityFilter(min_watch_ratio=1.0)
    assert stricter.select(feedback, shown).tolist() == [[True, False, False, False, False]]
    assert QualityFilter(exclude_hate=False).select(feedback, shown)[0, 1]
    with pytest.raises(ValueError, match="behaviours must name"):
        QualityFilter(behaviours=("likes",))


def test_logged_examples_are_the_engaged_exposures_with_their_request_context(
    logs: LoggedSessions, codec: SemanticIdCodec
) -> None:
    examples = LoggedExamples(logs)
    passed = QualityFilter().select(logs.feedback, logs.shown)
    assert examples.num_examples == int(passed.sum()) > 0
    picked = np.array([0, examples.num_examples - 1])
    context, items = examples.examples(picked)
    rows, positions = np.nonzero(passed)
    assert items.tolist() == logs.slates[rows[picked], positions[picked]].tolist()
    observation = logs.contexts(rows[picked])
    assert torch.equal(context.positive_items, torch.from_numpy(observation["positive_items"]))
    sampler = BatchSampler(examples, codec.item_codes, 4, torch.Generator().manual_seed(0))
    batch = sampler.next_batch()
    assert batch.target_codes.shape == (4, codec.num_levels)
    assert torch.equal(codec.decode(batch.target_codes) >= 0, torch.ones(4, dtype=torch.bool))


def test_positive_sequences_start_with_the_warm_positives(logs: LoggedSessions) -> None:
    sequences = positive_sequences(logs, QualityFilter())
    assert len(sequences) == logs.num_sessions
    warm = logs.columns["start_positive_items"][0]
    warm = warm[warm >= 0]
    assert sequences[0][: warm.size].tolist() == warm.tolist()
    first_session = logs.columns["session"] == 0
    engaged = QualityFilter().select(logs.feedback, logs.shown)[first_session]
    assert sequences[0][warm.size:].tolist() == logs.slates[first_session][engaged].tolist()


def test_logs_without_high_quality_exposures_are_a_clear_error(logs: LoggedSessions) -> None:
    columns = {**logs.columns, "feedback": np.zeros_like(logs.feedback)}
    empty = LoggedSessions(columns, logs.header)
    with pytest.raises(ValueError, match="logs /x hold no high-quality exposure.*loosen"):
        LoggedExamples(empty, source="logs /x")


def test_ranks_draw_disjoint_slices_of_the_single_process_batch() -> None:
    histories = np.arange(60, dtype=np.int64).reshape(30, 2) % 20
    examples = HistoryExamples(histories, np.arange(30) % 20, num_items=20)
    codes = torch.arange(20).repeat_interleave(2).view(20, 2) % 5  # (N, L)
    whole = BatchSampler(examples, codes, 6, torch.Generator().manual_seed(3)).next_batch()
    shards = [BatchSampler(examples, codes, 3, torch.Generator().manual_seed(3), rank, 2)
              .next_batch() for rank in range(2)]
    assert torch.equal(torch.cat([shard.target_codes for shard in shards]), whole.target_codes)
    assert torch.equal(torch.cat([shard.context.short_term_items for shard in shards]),
                       whole.context.short_term_items)
    with pytest.raises(ValueError, match=r"item_codes must be an integer \(20, L\) table"):
        BatchSampler(examples, codes[:10], 3, torch.Generator())


def test_loss_goes_down_on_a_tiny_model(codec: SemanticIdCodec) -> None:
    # Four users' logs (~30 engaged exposures): the model can learn them within 40 steps.
    config = PretrainConfig(max_steps=40, per_device_train_batch_size=16, learning_rate=1e-2,
                            warmup_steps=2)
    result = pretrain(small_policy(codec), LoggedExamples(small_logs(num_users=4)), config)
    assert len(result.losses) == result.steps == 40
    assert result.initial_loss == pytest.approx(math.log(8), abs=0.1)  # uniform over 8 codes
    assert result.final_loss < 0.75 * result.initial_loss
    assert result.tokens_per_s == pytest.approx(
        result.encoder_tokens_per_s + result.decoder_tokens_per_s)
    # Every example decodes its L = 3 codes; a context has at least its static token.
    assert result.decoder_tokens_per_s * result.train_seconds == pytest.approx(40 * 16 * 3)
    assert result.encoder_tokens_per_s > result.decoder_tokens_per_s


def test_history_examples_train_without_the_other_pathways(codec: SemanticIdCodec) -> None:
    generator = np.random.default_rng(0)
    histories = generator.integers(0, ITEMS, size=(64, 5))
    targets = (histories[:, -1] + 1) % ITEMS  # the next item follows the last one
    examples = HistoryExamples(histories, targets, ITEMS)
    result = pretrain(small_policy(codec), examples, PretrainConfig(max_steps=30, **FAST))
    assert result.final_loss < result.initial_loss


def test_same_seed_same_weights_other_seed_other_curve(
    logs: LoggedSessions, codec: SemanticIdCodec
) -> None:
    runs = []
    for seed in (0, 0, 1):
        policy = small_policy(codec)
        result = pretrain(policy, LoggedExamples(logs), PretrainConfig(max_steps=6, seed=seed,
                                                                       **FAST))
        runs.append((policy.state_dict(), result.losses))
    (first, first_losses), (second, second_losses), (_, other_losses) = runs
    assert first_losses == second_losses and first_losses != other_losses
    assert all(torch.equal(first[key], second[key]) for key in first)


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the training loop."""


class InterruptAfter:
    """Example source that fails when the trainer asks for batch `after + 1`."""

    def __init__(self, source: LoggedExamples, after: int) -> None:
        self.source, self.after, self.served = source, after, 0
        self.num_examples, self.num_items = source.num_examples, source.num_items
        self.complete_contexts, self.folder = source.complete_contexts, source.folder

    def examples(self, indices: np.ndarray) -> tuple[Context, torch.Tensor]:
        if self.served == self.after:
            raise Interrupted
        self.served += 1
        return self.source.examples(indices)


@pytest.mark.heavy
@pytest.mark.parametrize(("dropout", "version"), [(0.0, 2), (0.1, 2), (0.1, 1)])
def test_resume_after_an_interruption_continues_the_same_curve(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path, dropout: float, version: int
) -> None:
    logs_dir = tmp_path / "logs"
    logs.save(logs_dir)
    examples = LoggedExamples(LoggedSessions.load(logs_dir))
    config = PretrainConfig(max_steps=7, save_steps=3, logging_steps=2, **FAST)
    whole = small_policy(codec, dropout=dropout)
    uninterrupted = pretrain(whole, examples,
                             dataclasses.replace(config, output_dir=str(tmp_path / "whole")))
    resumed_policy = small_policy(codec, dropout=dropout)
    output_dir = str(tmp_path / "interrupted")
    with pytest.raises(Interrupted):  # killed during step 5: the checkpoint holds step 3
        pretrain(resumed_policy, InterruptAfter(examples, after=4),
                 dataclasses.replace(config, output_dir=output_dir))
    path = Path(output_dir) / CHECKPOINT_FILE
    if version == 1:  # as the code before the shared loop wrote it
        as_version_1(path)
        assert read_checkpoint(path).version == 1
    assert training_metadata(path) == {"logs": str(logs_dir)}
    assert load_policy(path).config == whole.config
    resumed_policy = small_policy(codec, dropout=dropout)  # a fresh process
    resumed = pretrain(resumed_policy, examples, dataclasses.replace(config, output_dir=output_dir))
    assert resumed.resumed_from_step == 3 and resumed.steps == 7
    assert resumed.losses == uninterrupted.losses  # bit for bit, including steps 1-3
    expected = whole.state_dict()
    assert all(torch.equal(value, expected[key])
               for key, value in resumed_policy.state_dict().items())
    assert (tmp_path / "interrupted" / "tensorboard").is_dir()
    assert read_checkpoint(path).version == 2  # written anew


def test_a_checkpoint_round_trips_to_identical_outputs(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    policy = small_policy(codec)
    pretrain(policy, LoggedExamples(logs),
             PretrainConfig(max_steps=3, output_dir=str(tmp_path), **FAST))
    loaded = load_policy(tmp_path / CHECKPOINT_FILE)
    assert loaded.config == policy.config
    context, items = LoggedExamples(logs).examples(np.arange(5))
    codes = codec.item_codes[items]
    policy.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(context, codes), policy(context, codes))
    assert torch.equal(loaded.items_from_codes(codes), items)


def test_tensorboard_gets_the_namespaced_scalars_and_the_hyperparameters(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pretrain(small_policy(codec), LoggedExamples(logs),
             PretrainConfig(max_steps=4, logging_steps=2, output_dir=str(tmp_path), **FAST))
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert set(events.Tags()["scalars"]) == {
        "losses/ntp", "losses/ntp_level_1", "losses/ntp_level_2", "losses/ntp_level_3",
        "charts/moe_balance", "charts/grad_norm", "charts/tokens_per_s", "charts/learning_rate",
    }
    assert [event.step for event in events.Scalars("losses/ntp")] == [2, 4]
    assert any("hyperparameters" in tag for tag in events.Tags()["tensors"])


def test_a_checkpoint_of_another_preset_is_a_clear_error(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    config = PretrainConfig(max_steps=2, output_dir=str(tmp_path), **FAST)
    pretrain(small_policy(codec), LoggedExamples(logs), config)
    bigger = small_policy(codec, preset="0.015B")
    path = tmp_path / CHECKPOINT_FILE
    with pytest.raises(ValueError, match=rf"{path} was saved from another model \(d_model: "
                                         r"checkpoint 64, now 128.*resume with the preset"):
        pretrain(bigger, LoggedExamples(logs), dataclasses.replace(config, max_steps=4))
    with pytest.raises(ValueError, match=rf"{path} was trained with other item tables "
                                         r"\(encoder.items.item_codes differ\)"):
        pretrain(small_policy(random_codec(seed=1)), LoggedExamples(logs),
                 dataclasses.replace(config, max_steps=4))
    with pytest.raises(ValueError, match=r"other settings \(seed: checkpoint 0, now 5\)"):
        pretrain(small_policy(codec), LoggedExamples(logs),
                 dataclasses.replace(config, max_steps=4, seed=5))


def test_a_corrupt_checkpoint_is_a_clear_error(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    config = PretrainConfig(max_steps=2, output_dir=str(tmp_path), **FAST)
    pretrain(small_policy(codec), LoggedExamples(logs), config)
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:4096])  # a write cut short
    with pytest.raises(ValueError, match=rf"{path} is not a readable checkpoint.*truncated"):
        pretrain(small_policy(codec), LoggedExamples(logs), dataclasses.replace(config,
                                                                               max_steps=4))
    with pytest.raises(ValueError, match=rf"{path} is not a readable checkpoint"):
        load_policy(path)


def test_bf16_autocast_follows_the_fp32_curve(logs: LoggedSessions, codec: SemanticIdCodec) -> None:
    # CPU autocast stands in for CUDA's here: same code path, the loss stays in float32.
    curves = [pretrain(small_policy(codec), LoggedExamples(logs),
                       PretrainConfig(max_steps=3, bf16=bf16, **FAST)).losses
              for bf16 in (False, True)]
    assert curves[1] != curves[0]
    assert curves[1] == pytest.approx(curves[0], abs=0.02)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
        PretrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        PretrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"min_lr_rate must be in \[0, 1\]"):
        PretrainConfig(min_lr_rate=2.0)
