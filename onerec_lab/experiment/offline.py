"""Train a model on Amazon Beauty (or any Beauty.txt-format file), rank with TIGER's protocol.

`evaluate_offline(path, OfflineConfig())` is what `onerec-lab evaluate-offline` runs.

Leave-one-out (each user's last item is the target, the second last is held out for
validation, the rest trains), histories of at most 20 items, full ranking over all items,
Recall@5/10 and NDCG@5/10 (`trainers.offline_eval`). The budget used (optimiser steps, wall
time, hardware) is part of the result: a figure means little without it. `--split valid`
ranks the validation targets instead (tune there, report test once).

The OneRec defaults are the setting tuned on Beauty's validation split
(`benchmarks/results/beauty.md`, `beauty_sweep.md`, `beauty_steps.md`): item embeddings at
InfoNCE temperature 0.2, 3 x 256 RQ-Kmeans codes, the dense `beauty` preset with the learned
repeat bias (`policies.repeat`), dropout 0.1, 48,000 steps of 128 examples in batches of one
history length, beam 20. `--exclude-history` drops each user's history items from SASRec's
scores or from OneRec's beams (the S3-Rec code's convention).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from envs.beauty import SequenceDataset, load_beauty
from onerec_lab.experiment.machine import hardware_description
from policies.config import config_for
from policies.encoder import Context
from policies.generation import beam_search
from policies.item_embeddings import ItemEmbeddingConfig, consecutive_pairs, train_item_embeddings
from policies.onerec import build_policy
from policies.rq_kmeans import RQKMeansConfig
from policies.sasrec import SASRecConfig, train_sasrec
from policies.tokenizer import build_semantic_ids
from trainers.offline_eval import Ranker, evaluate_ranker
from trainers.pretrain import PretrainConfig, pretrain
from trainers.pretrain_data import HistoryExamples, LengthGroupedHistoryExamples, next_item_examples

KS = (5, 10)  # TIGER reports Recall and NDCG at 5 and 10
ONEREC_LEARNING_RATE = 2e-3  # AdamW peak step of OneRec (1e-3: valid Recall@10 0.0726 against
# 0.0715 at 3,000 steps, within noise; beauty_sweep.md)
ONEREC_WARMUP_STEPS = 20  # linear warm-up of OneRec's learning rate (at most a tenth of the steps)
# Optimiser steps when --steps is not given. OneRec (batch 128, dropout 0.1): valid Recall@10
# 0.0845 at 24,000 steps, 0.0868 at 36,000, 0.0890 at 48,000, 0.0873 at 60,000
# (benchmarks/results/beauty_steps.md); SASRec: SASRecConfig's 2,000.
DEFAULT_STEPS = {"onerec": 48_000, "sasrec": SASRecConfig.steps}


@dataclass(frozen=True)
class OfflineConfig:
    """What to train and how to rank (the options of `onerec-lab evaluate-offline`)."""

    model: Literal["onerec", "sasrec"] = "onerec"  # semantic-ID OneRec or item-id SASRec
    split: Literal["valid", "test"] = "test"  # rank the validation or the test targets
    preset: str = "beauty"  # OneRec size preset (policies.config.PRESETS); SASRec has one size
    steps: int | None = None  # optimiser steps; default OneRec 48,000 (47 epochs), SASRec 2,000
    seed: int = 0  # seeds embeddings, codes, initialisation, batch order and dropout
    batch_size: int = 128  # training examples (SASRec: windows) per optimiser step
    beam: int = 20  # OneRec beam width; must be >= 10 to fill a top-10 list
    codebook: int = 256  # OneRec codes per level, 3 levels (TIGER's 3 x 256 on Beauty)
    balanced: bool = False  # OneRec: balanced RQ-Kmeans (OneRec v1); Beauty valid 0.0696 < 0.0715
    embedding_temperature: float = 0.2  # OneRec item-embedding InfoNCE temperature; 0.2 gave
    # the best codes on Beauty (valid Recall@10 0.0715, vs 0.0522 at 0.07 and 0.0637 at 0.5)
    code_embeddings: Literal["infonce", "sasrec"] = "infonce"  # OneRec codes quantise these
    # item embeddings: InfoNCE's, or the item table of a SASRec trained on the same training
    # split (validation comparison in beauty_sweep.md)
    code_embedding_steps: int | None = None  # optimiser steps of the SASRec behind
    # code_embeddings="sasrec"; None = SASRec's default 2,000 (fewer for a tiny dataset)
    pair_window: int = 1  # OneRec: InfoNCE pairs each item with the next `pair_window` items
    item_id_input: bool = False  # OneRec: encoder item tokens also add an item-id embedding
    repeat_bias: bool = True  # OneRec: learned logit offsets for codes that continue or
    # commit to a history item (OneRecConfig.repeat_bias); valid Recall@10 0.0915 against
    # 0.0890 without, 48,000 steps (benchmarks/results/beauty_repeat.md)
    group_by_length: bool = True  # OneRec: batches of one history length (~2x faster steps)
    dropout: float = 0.1  # OneRec dropout while training (TIGER's 0.1): it costs at 3,000 steps
    # and pays over a long run (validation figures in beauty_sweep.md and beauty_steps.md)
    learning_rate: float | None = None  # AdamW step; default SASRec 3e-3, OneRec 2e-3
    exclude_history: bool = False  # drop history items from the ranking (the S3-Rec code's rule)

    def __post_init__(self) -> None:
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.model])
        for name in ("steps", "batch_size", "codebook", "pair_window", "code_embedding_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.embedding_temperature <= 0:
            raise ValueError(
                f"--embedding-temperature must be > 0, got {self.embedding_temperature}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.beam < max(KS):
            raise ValueError(
                f"--beam must be >= {max(KS)} to fill a top-{max(KS)} list, got {self.beam}"
            )


class TrainedRanker(NamedTuple):
    """A trained model's ranker for `evaluate_ranker` and what its training reported."""

    ranker: Ranker  # histories (B, T) -> scores (B, N) or item lists (B, beam)
    final_loss: float  # mean training loss over the last 10 steps
    details: dict[str, Any]  # model-specific facts worth printing (codebooks, sizes...)


def train_sasrec_ranker(dataset: SequenceDataset, settings: OfflineConfig) -> TrainedRanker:
    """SASRec on the training sequences; it ranks by scoring every item."""
    config = SASRecConfig(steps=settings.steps, batch_size=settings.batch_size, seed=settings.seed)
    if settings.learning_rate is not None:
        config = dataclasses.replace(config, learning_rate=settings.learning_rate)
    losses: list[float] = []
    model = train_sasrec(dataset.train_sequences, dataset.num_items, config,
                         on_step=lambda step, loss: losses.append(loss))
    details = {"negatives": config.negatives, "width": config.width, "layers": config.layers}
    return TrainedRanker(model.scores, float(np.mean(losses[-10:])), details)


def code_embeddings(dataset: SequenceDataset, settings: OfflineConfig) -> torch.Tensor:
    """The item embeddings (N, D) that RQ-Kmeans turns into semantic IDs, learnt from the
    training sequences only: InfoNCE over co-engaged pairs, or a SASRec's item table."""
    if settings.code_embeddings == "sasrec":
        config = SASRecConfig(seed=settings.seed)
        if settings.code_embedding_steps is not None:
            config = dataclasses.replace(config, steps=settings.code_embedding_steps)
        model = train_sasrec(dataset.train_sequences, dataset.num_items, config)
        return model.item_embedding.weight.detach()[:dataset.num_items].float()  # (N, D)
    pairs = consecutive_pairs(dataset.train_sequences, window=settings.pair_window)
    embedding_config = ItemEmbeddingConfig(temperature=settings.embedding_temperature, seed=settings.seed)
    return train_item_embeddings(dataset.num_items, pairs, embedding_config)  # (N, D)


def train_onerec_ranker(dataset: SequenceDataset, settings: OfflineConfig) -> TrainedRanker:
    """Semantic IDs from the training sequences, then OneRec trained by next-token prediction
    on (history -> next item) pairs; it ranks by trie-constrained beam search."""
    embeddings = code_embeddings(dataset, settings)
    quantizer = RQKMeansConfig(codebook_sizes=(settings.codebook,) * 3, balanced=settings.balanced,
                               seed=settings.seed)
    codec = build_semantic_ids(embeddings, quantizer).codec
    config = config_for(settings.preset, num_items=dataset.num_items,
                        codebook_sizes=codec.codebook_sizes, dropout=settings.dropout,
                        item_id_input=settings.item_id_input, repeat_bias=settings.repeat_bias)
    policy = build_policy(config, seed=settings.seed)
    policy.set_item_codes(codec.item_codes)
    histories, targets = next_item_examples(dataset.train_sequences, max_history=20)
    training = PretrainConfig(
        learning_rate=settings.learning_rate or ONEREC_LEARNING_RATE, max_steps=settings.steps,
        warmup_steps=min(ONEREC_WARMUP_STEPS, settings.steps // 10),
        per_device_train_batch_size=settings.batch_size, seed=settings.seed, progress=False,
    )
    source = LengthGroupedHistoryExamples if settings.group_by_length else HistoryExamples
    result = pretrain(policy, source(histories, targets, dataset.num_items), training)
    policy.eval()
    device = next(policy.parameters()).device
    constraint = policy.codec.to(device)

    def ranker(history: torch.Tensor) -> torch.Tensor:
        context = Context.from_history(history.to(device))
        return beam_search(policy, context, settings.beam, constraint).items.cpu()  # (B, beam)

    details = {"codebook_sizes": list(codec.codebook_sizes), "preset": settings.preset,
               "code_embeddings": settings.code_embeddings, "dropout": settings.dropout,
               "beam": settings.beam, "training_pairs": len(targets),
               "training_targets_in_history": int((histories == targets[:, None]).any(1).sum()),
               "parameters": sum(p.numel() for p in policy.parameters())}
    if settings.code_embeddings == "sasrec":
        details["code_embedding_steps"] = settings.code_embedding_steps or SASRecConfig.steps
    if policy.decoder.repeat_bias is not None:
        bias = policy.decoder.repeat_bias.detach().cpu()  # (2, L)
        details["repeat_bias"] = {"continues": [round(float(b), 3) for b in bias[0]],
                                  "commits": [round(float(b), 3) for b in bias[1]]}
    return TrainedRanker(ranker, result.final_loss, details)


def train_ranker(dataset: SequenceDataset, settings: OfflineConfig) -> TrainedRanker:
    """Train `settings.model` on `dataset.train_sequences` (the same for both splits)."""
    train = train_onerec_ranker if settings.model == "onerec" else train_sasrec_ranker
    return train(dataset, settings)


def split_metrics(
    ranker: Ranker, dataset: SequenceDataset, split: Literal["valid", "test"],
    exclude_history: bool = False, groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recall@5/10, NDCG@5/10, the invalid rate and the user count on one split's targets
    (and `by_group`, the same per label, when `groups` gives one label per user)."""
    held_out = dataset.valid if split == "valid" else dataset.test
    metrics = evaluate_ranker(ranker, held_out, ks=KS, exclude_history=exclude_history,
                              groups=groups)
    return {
        **{f"{name}@{k}": metrics[f"{name}@{k}"] for k in KS for name in ("recall", "ndcg")},
        "invalid_rate": metrics["invalid_rate"],
        "users": metrics["users"],
        **({"by_group": metrics["by_group"]} if groups is not None else {}),
    }


def evaluate_offline(data: str | Path, settings: OfflineConfig) -> dict[str, Any]:
    """Train the chosen model on the training part of `data` and rank the held-out targets
    of `settings.split`."""
    dataset = load_beauty(data, max_history=20)
    start = time.perf_counter()
    trained = train_ranker(dataset, settings)
    train_seconds = time.perf_counter() - start
    return {
        "model": settings.model,
        "split": settings.split,
        **split_metrics(trained.ranker, dataset, settings.split, settings.exclude_history),
        "items": dataset.num_items,
        "exclude_history": settings.exclude_history,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "final_loss": trained.final_loss,
        **trained.details,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "hardware": hardware_description(),
    }
