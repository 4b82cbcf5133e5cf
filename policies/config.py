"""Configuration of the OneRec encoder-decoder, and the size presets of the report's family.

Table 1 of the technical report lists four shapes (0.015B to 2.633B) with "encoder and
decoder of equal depth". The parameter counts only add up when the table's layer count is the
total, split evenly between encoder and decoder (e.g. 0.935B: 4 decoder layers of 24 SwiGLU
experts of hidden 2816 is ~0.83B), so `layers: 8` becomes 4 encoder + 4 decoder layers here.
Counted on this implementation (untied code tables, SwiGLU everywhere, lifelong compressor):
0.011B, 0.206B, 1.011B and 5.24B. The last follows the table's "MoE in encoder and decoder";
with decoder-only MoE it would be 2.82B, closer to the name: the table is ambiguous there.
`tiny` is not from the report: it is the shape every CPU test and quick-start run uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from envs.spec import (
    LIFELONG_LENGTH,
    NUM_FEEDBACK,
    POSITIVE_LENGTH,
    SHORT_TERM_LENGTH,
    STATIC_CARDINALITIES,
)


def report_expert_hidden(d_model: int) -> int:
    """The report's MoE expert width: (2/3) x 4 x d_model rounded up to a multiple of 128."""
    return 128 * math.ceil(2 * 4 * d_model / 3 / 128)


@dataclass(frozen=True)
class OneRecConfig:
    """Shape and options of a `OneRecPolicy`; defaults are the CPU-sized `tiny` preset."""

    d_model: int = 64  # model width; 64 keeps CPU runs quick (~30 ms/step on 64 short histories)
    num_heads: int = 4  # attention heads; the report's small model uses 4
    encoder_layers: int = 2  # fusion transformer depth (the report: equal to decoder depth)
    decoder_layers: int = 2  # decoder depth
    ffn_hidden: int = 128  # hidden width of the dense SwiGLU FFNs (the report: 2 x d_model)
    num_experts: int = 4  # experts per MoE layer; 0 = dense model (no MoE anywhere)
    experts_active: int = 2  # top-k experts per token (the report: 2 for 0.935B, 4 for 2.633B)
    expert_hidden: int = 0  # hidden width of one expert; 0 = the report's (2/3)*4*d rounded
    moe_in_encoder: bool = False  # MoE FFN in the fusion transformer (only the 2.633B model)
    moe_in_decoder: bool = True  # MoE FFN in the decoder (the report's 0.935B and 2.633B)
    balance_update_rate: float = 1e-3  # gamma of loss-free balancing; DeepSeek-V3 uses 1e-3
    codebook_sizes: tuple[int, ...] = (64, 64, 64)  # codes per level L; set from the codec
    num_items: int = 20_000  # rows of the item -> codes table; set to the codec's num_items
    short_term_length: int = SHORT_TERM_LENGTH  # the report's last 20 interactions
    positive_length: int = POSITIVE_LENGTH  # the report's 256 high-engagement interactions
    lifelong_length: int = LIFELONG_LENGTH  # lifelong items the environment hands over
    lifelong_queries: int = 32  # learned queries compressing the lifelong pathway (report: 128)
    compressor_blocks: int = 2  # cross-attention blocks of the compressor (the report: 2)
    feedback_dim: int = NUM_FEEDBACK  # feedback columns of short-term and positive items
    lifelong_feature_dim: int = NUM_FEEDBACK + 1  # cluster-mean feedback, then cluster size
    static_cardinalities: tuple[int, ...] = STATIC_CARDINALITIES  # values per static field
    static_embedding_dim: int = 64  # width of each static field's embedding (the report: 64)
    num_creators: int = 0  # creator embedding table size; 0 = no creator side feature
    num_categories: int = 0  # (leaf) category table size; 0 = no category side feature
    num_duration_buckets: int = 0  # duration-bucket table size; 0 = no duration side feature
    item_id_input: bool = False  # also embed each input item's id (the report's "item id or
    # SID" pathway input): num_items x d_model more parameters; output stays semantic IDs
    repeat_bias: bool = False  # learn two logit offsets per level, for codes that continue
    # one of the user's history items and for codes that commit to history items only
    # (policies.repeat): the data decide whether users take an item again
    dropout: float = 0.0  # residual and attention dropout; 0 because RL needs exact log-probs
    session_items: int = 1  # items per generated sequence: 1 = point-wise, 5 = OneRec v1

    def __post_init__(self) -> None:
        # Lists from the command line or a codec become tuples, so configs stay hashable.
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        object.__setattr__(
            self, "static_cardinalities", tuple(int(k) for k in self.static_cardinalities)
        )
        positive = {
            "d_model": self.d_model, "num_heads": self.num_heads,
            "encoder_layers": self.encoder_layers, "decoder_layers": self.decoder_layers,
            "ffn_hidden": self.ffn_hidden, "num_items": self.num_items,
            "short_term_length": self.short_term_length,
            "positive_length": self.positive_length, "lifelong_length": self.lifelong_length,
            "lifelong_queries": self.lifelong_queries,
            "compressor_blocks": self.compressor_blocks,
            "static_embedding_dim": self.static_embedding_dim,
            "session_items": self.session_items,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("num_experts", "experts_active", "expert_hidden", "feedback_dim",
                     "lifelong_feature_dim", "num_creators", "num_categories",
                     "num_duration_buckets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must be a multiple of num_heads={self.num_heads}; "
                "change one of them"
            )
        if self.uses_moe:
            if self.num_experts < 2:
                raise ValueError(
                    f"num_experts must be >= 2 when moe_in_encoder or moe_in_decoder is set, "
                    f"got {self.num_experts}; set both flags to False for a dense model"
                )
            if not 1 <= self.experts_active <= self.num_experts:
                raise ValueError(
                    f"experts_active must be in [1, num_experts={self.num_experts}], "
                    f"got {self.experts_active}"
                )
        if not self.codebook_sizes or min(self.codebook_sizes) < 2:
            raise ValueError(
                f"codebook_sizes must list one size >= 2 per level, got {self.codebook_sizes}; "
                "use the codec's codebook_sizes"
            )
        if math.prod(self.codebook_sizes) >= 2**62:
            raise ValueError(
                f"codebook_sizes {self.codebook_sizes} span more than 2**62 code sequences; "
                "code sequences must fit an int64 key"
            )
        if len(self.static_cardinalities) < 1 or min(self.static_cardinalities) < 1:
            raise ValueError(
                f"static_cardinalities must be positive counts, got {self.static_cardinalities}"
            )
        if self.balance_update_rate < 0:
            raise ValueError(
                f"balance_update_rate must be >= 0 (0 turns balancing off), "
                f"got {self.balance_update_rate}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_moe(self) -> bool:
        return self.moe_in_encoder or self.moe_in_decoder

    @property
    def num_levels(self) -> int:
        """L: codes per item."""
        return len(self.codebook_sizes)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one generated unit: (L,) point-wise, (M, L) session-wise."""
        if self.session_items == 1:
            return (self.num_levels,)
        return (self.session_items, self.num_levels)

    @property
    def decoder_length(self) -> int:
        """Codes generated per sequence: session_items x L."""
        return self.session_items * self.num_levels

    @property
    def expert_width(self) -> int:
        """Hidden width of one expert: `expert_hidden`, or the report's rule when 0."""
        return self.expert_hidden or report_expert_hidden(self.d_model)


def _report_shape(layers: int, d_model: int, ffn: int, heads: int) -> OneRecConfig:
    """A report shape: `layers` split evenly between encoder and decoder, 3 x 8192 codes."""
    return OneRecConfig(
        d_model=d_model, num_heads=heads, encoder_layers=layers // 2,
        decoder_layers=layers // 2, ffn_hidden=ffn, num_experts=0, experts_active=0,
        moe_in_decoder=False, codebook_sizes=(8192, 8192, 8192), lifelong_queries=128,
    )


PRESETS: dict[str, OneRecConfig] = {
    "tiny": OneRecConfig(),
    # Amazon Beauty on a CPU (`onerec-lab evaluate-offline`): `tiny` without MoE. A dense
    # decoder is ~20% cheaper per step there, and d=128 (0.015B) did no better, per step or
    # after 48,000 steps (valid Recall@10 0.0865 against 0.0890; beauty_steps.md).
    "beauty": dataclasses.replace(
        OneRecConfig(), num_experts=0, experts_active=0, moe_in_decoder=False
    ),
    "0.015B": _report_shape(layers=4, d_model=128, ffn=256, heads=4),
    "0.121B": _report_shape(layers=8, d_model=1024, ffn=2048, heads=8),
    "0.935B": dataclasses.replace(
        _report_shape(layers=8, d_model=1024, ffn=2048, heads=8),
        num_experts=24, experts_active=2, moe_in_decoder=True,
    ),
    "2.633B": dataclasses.replace(
        _report_shape(layers=24, d_model=1024, ffn=2048, heads=8),
        num_experts=24, experts_active=4, moe_in_encoder=True, moe_in_decoder=True,
    ),
}


def config_for(preset: str, **overrides: object) -> OneRecConfig:
    """The named preset with some fields replaced, e.g. `config_for("tiny", num_items=500)`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {field.name for field in dataclasses.fields(OneRecConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown OneRecConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(PRESETS[preset], **overrides)
