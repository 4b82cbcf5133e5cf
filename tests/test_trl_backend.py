"""The TRL backend: a causal semantic-ID policy trained by TRL's GRPOTrainer, offline, on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.logs import LoggedSessions
from policies.codec import SemanticIdCodec
from rewards import PScoreConfig, PScoreModel, SemanticIdVocabulary
from trainers.trl_backend import (
    SPECIAL_TOKENS,
    TRLBackendConfig,
    code_tokenizer,
    history_prompts,
    train_with_trl,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_the_tokenizer_is_the_semantic_id_vocabulary(codec: SemanticIdCodec) -> None:
    tokenizer = code_tokenizer(codec.codebook_sizes)
    vocabulary = SemanticIdVocabulary.from_codec(codec, offset=len(SPECIAL_TOKENS))
    codes = codec.item_codes[:5]  # (5, L)
    text = " ".join(f"c{level}_{int(code)}" for item in codes for level, code in enumerate(item))
    assert tokenizer(text)["input_ids"] == vocabulary.tokens(codes[None]).flatten().tolist()
    assert tokenizer.pad_token == "<pad>" and tokenizer.padding_side == "left"


def test_prompts_are_the_latest_positive_items_as_codes(logs: LoggedSessions,
                                                        codec: SemanticIdCodec) -> None:
    rows = np.array([0, 7])
    prompts = history_prompts(logs, torch.as_tensor(codec.item_codes), rows, history=3)
    latest = logs.contexts(rows)["positive_items"][0, -3:]
    words = prompts[0].split()
    assert len(words) == 3 * len(latest[latest >= 0])
    assert words[-3:] == [f"c{level}_{int(code)}" for level, code in
                          enumerate(codec.item_codes[latest[-1]])]


@pytest.mark.heavy
def test_trls_grpo_trainer_runs_two_steps_on_our_rewards(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pscore = PScoreModel(PScoreConfig.from_catalog(logs.catalog, embed_dim=8, hidden_dim=16,
                                                       tower_dim=8), logs.catalog).eval()
    config = TRLBackendConfig(output_dir=str(tmp_path), max_steps=2, num_generations=4,
                              prompts_per_step=2, num_prompts=16, loss_type="dapo")
    trainer = train_with_trl(logs, codec, "pscore + format", {"pscore_model": pscore}, config)
    assert trainer.state.global_step == 2
    logged = trainer.state.log_history[0]
    assert {"rewards/pscore + format/mean", "rewards/pscore", "rewards/format",
            "clip_ratio/region_mean"} <= set(logged)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        TRLBackendConfig(output_dir="x", num_generations=1)
