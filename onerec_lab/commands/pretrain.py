"""`onerec-lab pretrain`: next-token pre-training of OneRec on logged sessions (or Beauty).

Data: a logged-sessions folder (`onerec-lab simulate --out DIR`; every high-quality exposure
is an example) or, with `--data`, a Beauty.txt-format file (history -> next item).

Semantic IDs: `--codec`, else `codec.safetensors` in the logs folder, else the one a previous
run saved in `--out`; otherwise they are built here (item embeddings trained on the catalog's
content and the consecutive positives of the logs, then balanced residual k-means with
`--codebook` codes per level, 3 levels) and saved to `--out/codec.safetensors`
(`onerec_lab.experiment.pretraining`). The training options are `PretrainConfig`'s fields.

`--out` receives the checkpoint, the codec and TensorBoard logs; a run whose `--out` holds a
checkpoint resumes it.

Data-parallel (gloo on CPU, NCCL on GPUs; `--batch-size` is per process):

    torchrun --standalone --nproc_per_node=2 --local-ranks-filter=0 \
        -m onerec_lab.cli -- pretrain --logs DIR --out CKPT

The `--` keeps torchrun from reading `--logs` as an abbreviation of its own `--logs-specs`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from onerec_lab.experiment.pretraining import CodecSettings, pretrain_policy
from policies.config import PRESETS
from trainers.pretrain import PretrainConfig
from trainers.pretrain_data import QualityFilter


@dataclass
class PretrainArgs:
    """Arguments of `onerec-lab pretrain`."""

    out: str  # folder for the checkpoint, codec and TensorBoard logs; resumed from if it has one
    preset: str = "tiny"  # model shape (policies.config.PRESETS): tiny, 0.015B, 0.121B, ...
    logs: str | None = None  # a logged-sessions folder (onerec-lab simulate --out DIR)
    data: str | None = None  # instead of --logs: a Beauty.txt-format file (history -> next item)
    codec: CodecSettings = field(default_factory=CodecSettings)  # where the codes come from
    quality: QualityFilter = field(default_factory=QualityFilter)  # which exposures are targets
    training: PretrainConfig = field(  # optimisation, logging, checkpoints (seed: also weights)
        default_factory=PretrainConfig,
        metadata={"hidden": ("output_dir", "progress"),
                  "aliases": {"max_steps": "--steps",
                              "per_device_train_batch_size": "--batch-size"}})
    json: bool = False  # print one JSON object (and no progress bar)

    def __post_init__(self) -> None:
        if (self.logs is None) == (self.data is None):
            raise ValueError(
                "give exactly one of --logs (a logged-sessions folder) and --data (a "
                f"Beauty.txt-format file), got logs={self.logs!r} and data={self.data!r}"
            )
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")


def run(args: PretrainArgs) -> dict[str, Any]:
    """Prepare the data and the codec, build the policy, pre-train it; return the figures."""
    training = dataclasses.replace(args.training, progress=not args.json)
    return pretrain_policy(args.out, training, logs=args.logs, data=args.data,
                           preset=args.preset, codec=args.codec,
                           quality_filter=args.quality).to_dict()
