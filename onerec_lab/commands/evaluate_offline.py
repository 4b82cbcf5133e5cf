"""`onerec-lab evaluate-offline`: train a model on Amazon Beauty and rank with TIGER's protocol.

Leave-one-out splits, histories of at most 20 items, full ranking over all items,
Recall@5/10 and NDCG@5/10; the options are `OfflineConfig`'s
(`onerec_lab.experiment.offline`, where the defaults' validation figures are recorded).
`--split valid` ranks the validation targets instead (tune there, report test once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onerec_lab.experiment.offline import OfflineConfig, evaluate_offline


@dataclass(frozen=True)
class EvaluateOfflineArgs:
    """Options of `onerec-lab evaluate-offline`."""

    data: str  # a Beauty.txt-format file: one line per user, "user_id item_id ...", oldest first
    settings: OfflineConfig = field(default_factory=OfflineConfig)  # model, budget, ranking
    json: bool = False  # print one JSON object instead of a table


def run(args: EvaluateOfflineArgs) -> dict[str, Any]:
    """Train the chosen model on the training part of `--data`, rank the held-out targets."""
    return evaluate_offline(args.data, args.settings)
