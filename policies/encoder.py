"""The OneRec encoder: four pathways of a user's context fused by a bidirectional transformer.

Pathways (technical report, "Encoder"): one static token; short-term items (last 20) and
positive-feedback items (last 256), each token the sum of the item's code embeddings, its
side features and a projection of its feedback, through a pathway MLP; lifelong items
compressed by learned queries (2 blocks of cross-attention). The tokens are concatenated
(1 + 20 + 256 + 128 = 405 for the report's shapes) with learned position embeddings and
fused by pre-RMSNorm transformer layers with full attention.

Pathways are most recent last, padded in front (the simulator's layout). Positions count
from the end, so the most recent item always sits in a pathway's last slot, also when a
context is shorter than the model's pathway (e.g. a 5-item Amazon Beauty history).

Padding (item id -1) never attends and is never attended to. An empty history (all padding,
or a pathway left out) is allowed: the static token always exists (a learned "unknown" value
stands in for absent static features), so every user keeps at least one memory token; a user
without lifelong items gets its compressed lifelong tokens marked as padding.

Letters in shape comments: B users, T pathway tokens, S memory tokens, Q lifelong queries,
F feedback columns, L code levels, N catalog items, D model width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from envs.spec import BLANK
from policies.config import OneRecConfig
from policies.layers import Attention, RMSNorm, SwiGLU, padding_attention_mask
from policies.moe import MoEFeedForward

_OBSERVATION_KEYS = (
    "static", "short_term_items", "short_term_feedback", "positive_items",
    "positive_feedback", "lifelong_items", "lifelong_features",
)
_ID_KEYS = ("static", "short_term_items", "positive_items", "lifelong_items")


@dataclass(frozen=True)
class Context:
    """A batch of user contexts; each pathway is optional (None = the user has none).

    Item ids are int64 with -1 as padding, most recent last; feedback is float32 in
    `FEEDBACK_FIELDS` order. A pathway may be shorter than the model's (e.g. 10 short-term
    items), never longer.
    """

    static: Tensor | None = None  # (B, 5) int64 static field values, -1 = unknown
    short_term_items: Tensor | None = None  # (B, T) int64
    short_term_feedback: Tensor | None = None  # (B, T, F) float32; None = no feedback
    positive_items: Tensor | None = None  # (B, T) int64
    positive_feedback: Tensor | None = None  # (B, T, F) float32
    lifelong_items: Tensor | None = None  # (B, T) int64
    lifelong_features: Tensor | None = None  # (B, T, F + 1) float32

    @classmethod
    def from_observation(
        cls, observation: Mapping[str, Any], device: torch.device | str | None = None
    ) -> Context:
        """A context from a simulator observation (numpy arrays or tensors).

        Keys that are absent become None; a single user's observation (no batch axis) gets
        one. Other keys (the simulator may add some) are ignored.
        """
        tensors = {
            key: torch.as_tensor(observation[key], device=device)
            for key in _OBSERVATION_KEYS if key in observation
        }
        if not tensors:
            raise ValueError(f"the observation holds none of the keys {', '.join(_OBSERVATION_KEYS)}")
        first_key, first = next(iter(tensors.items()))
        single = first.dim() == (1 if first_key in _ID_KEYS else 2)
        for key, value in tensors.items():
            value = value.long() if key in _ID_KEYS else value.float()
            tensors[key] = value.unsqueeze(0) if single else value
        return cls(**tensors)

    @classmethod
    def from_history(cls, items: Tensor, feedback: Tensor | None = None) -> Context:
        """A context of only a short-term history (B, T), most recent last (Amazon Beauty)."""
        return cls(short_term_items=items, short_term_feedback=feedback)

    @property
    def batch_size(self) -> int:
        """B, read from the first pathway present."""
        for value in dataclasses.astuple(self):
            if value is not None:
                return int(value.shape[0])
        raise ValueError("the context holds no pathway; give at least one (e.g. static)")

    @property
    def device(self) -> torch.device:
        """Device of the first pathway present."""
        for value in dataclasses.astuple(self):
            if value is not None:
                return value.device
        raise ValueError("the context holds no pathway; give at least one (e.g. static)")

    def to(self, device: torch.device | str) -> Context:
        """The same context with every pathway on `device`."""
        return Context(*(None if v is None else v.to(device) for v in dataclasses.astuple(self)))


def _squash(features: Tensor) -> Tensor:
    """sign(x) log(1 + |x|): watch time in seconds and 0/1 labels on comparable scales."""
    return torch.sign(features) * torch.log1p(features.abs())


class ItemEmbedding(nn.Module):
    """Item id -> sum of its code embeddings (one table per level) and side features.

    Holds the catalog tables as buffers: item -> codes (N, L), set from the codec, and the
    optional side features (creator, category, duration bucket) (N,).
    """

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        sizes = config.codebook_sizes
        # One table whose rows are level 1's codes, then level 2's, ...: one lookup per token.
        offsets = [sum(sizes[:level]) for level in range(len(sizes))]
        self.register_buffer("level_offsets", torch.tensor(offsets), persistent=False)  # (L,)
        self.codes = nn.Embedding(sum(sizes), config.d_model)
        self.register_buffer(
            "item_codes", torch.full((config.num_items, config.num_levels), BLANK)
        )  # (N, L); -1 until set_item_codes
        self.side_features = nn.ModuleDict()
        for name, size in (("creator", config.num_creators),
                           ("category", config.num_categories),
                           ("duration_bucket", config.num_duration_buckets)):
            if size:
                self.side_features[name] = nn.Embedding(size, config.d_model)
                self.register_buffer(f"item_{name}", torch.zeros(config.num_items, dtype=torch.long))
        self.ids = nn.Embedding(config.num_items, config.d_model) if config.item_id_input else None

    def forward(self, items: Tensor) -> Tensor:
        """(B, T) item ids (-1 = padding) -> (B, T, D); padding rows are zero."""
        valid = items != BLANK
        index = items.clamp_min(0)
        codes = self.item_codes[index]  # (B, T, L)
        embedded = self.codes(codes + self.level_offsets).sum(-2)  # (B, T, D)
        for name, table in self.side_features.items():
            embedded = embedded + table(getattr(self, f"item_{name}")[index])
        if self.ids is not None:
            embedded = embedded + self.ids(index)
        return embedded * valid.unsqueeze(-1)


class PathwayEncoder(nn.Module):
    """Tokens of one item pathway: item embedding + feedback projection, then an MLP."""

    def __init__(self, d_model: int, feature_dim: int) -> None:
        super().__init__()
        self.features = nn.Linear(feature_dim, d_model) if feature_dim else None
        self.mlp = nn.Sequential(
            RMSNorm(d_model), nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model)
        )

    def forward(self, item_embeddings: Tensor, features: Tensor | None) -> Tensor:
        """(B, T, D) and (B, T, F) or None (= no feedback) -> (B, T, D)."""
        tokens = item_embeddings
        if features is not None and self.features is not None:
            tokens = tokens + self.features(_squash(features))
        return self.mlp(tokens)


class StaticEncoder(nn.Module):
    """The user's static fields -> one token; -1 (or an absent pathway) = a learned unknown."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.fields = nn.ModuleList(
            nn.Embedding(cardinality + 1, config.static_embedding_dim)  # row 0 = unknown
            for cardinality in config.static_cardinalities
        )
        width = config.static_embedding_dim * len(config.static_cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(width, config.d_model), nn.SiLU(), nn.Linear(config.d_model, config.d_model)
        )

    def forward(self, static: Tensor) -> Tensor:
        """(B, fields) int64 -> (B, 1, D)."""
        shifted = static + 1
        embedded = [table(shifted[:, i]) for i, table in enumerate(self.fields)]
        return self.mlp(torch.cat(embedded, dim=-1)).unsqueeze(1)


def feed_forward(config: OneRecConfig, moe: bool) -> nn.Module:
    """A dense SwiGLU FFN, or an MoE layer of SwiGLU experts."""
    if moe:
        return MoEFeedForward(
            config.d_model, config.expert_width, config.num_experts, config.experts_active,
            config.balance_update_rate,
        )
    return SwiGLU(config.d_model, config.ffn_hidden)


def apply_feed_forward(ffn: nn.Module, x: Tensor, token_mask: Tensor | None) -> Tensor:
    """Run a dense or MoE FFN; the MoE skips padding tokens (and leaves them out of its loads)."""
    if isinstance(ffn, MoEFeedForward):
        return ffn(x, token_mask)
    return ffn(x)


class CompressorBlock(nn.Module):
    """Learned queries cross-attend to the lifelong tokens, then a SwiGLU FFN."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.query_norm = RMSNorm(config.d_model)
        self.source_norm = RMSNorm(config.d_model)
        self.attention = Attention(config.d_model, config.num_heads, config.dropout)
        self.ffn_norm = RMSNorm(config.d_model)
        self.ffn = SwiGLU(config.d_model, config.ffn_hidden)

    def forward(self, queries: Tensor, source: Tensor, mask: Tensor) -> Tensor:
        """(B, Q, D) queries over (B, T, D) source with mask (B, 1, 1, T) -> (B, Q, D)."""
        keys, values = self.attention.keys_values(self.source_norm(source))
        queries = queries + self.attention(self.query_norm(queries), keys, values, mask)
        return queries + self.ffn(self.ffn_norm(queries))


class LifelongCompressor(nn.Module):
    """Compress T lifelong tokens (clusters in recency order) into Q learned-query tokens."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(config.lifelong_queries, config.d_model) * 0.02)
        self.positions = nn.Embedding(config.lifelong_length, config.d_model)
        self.blocks = nn.ModuleList(CompressorBlock(config) for _ in range(config.compressor_blocks))

    def forward(self, tokens: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, D), (B, T) -> compressed (B, Q, D) and their validity (B, Q).

        A user without any lifelong item gets all Q compressed tokens marked invalid.
        """
        length = tokens.shape[1]
        tokens = tokens + self.positions.weight[self.positions.num_embeddings - length :]
        mask = padding_attention_mask(valid)
        compressed = self.queries.expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            compressed = block(compressed, tokens, mask)
        has_history = valid.any(dim=1, keepdim=True)  # (B, 1)
        return compressed, has_history.expand(-1, compressed.shape[1])


class EncoderLayer(nn.Module):
    """Pre-RMSNorm transformer layer with full (bidirectional) attention."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model)
        self.attention = Attention(config.d_model, config.num_heads, config.dropout)
        self.ffn_norm = RMSNorm(config.d_model)
        self.ffn = feed_forward(config, config.moe_in_encoder)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor, valid: Tensor) -> Tensor:
        """(B, S, D) with attention mask (B, 1, 1, S) and token validity (B, S) -> (B, S, D)."""
        normed = self.attention_norm(x)
        keys, values = self.attention.keys_values(normed)
        x = x + self.dropout(self.attention(normed, keys, values, mask))
        return x + self.dropout(apply_feed_forward(self.ffn, self.ffn_norm(x), valid))


class OneRecEncoder(nn.Module):
    """Context -> memory tokens (B, S, D) and their validity (B, S)."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.config = config
        self.items = ItemEmbedding(config)
        self.static = StaticEncoder(config)
        self.short_term = PathwayEncoder(config.d_model, config.feedback_dim)
        self.positive = PathwayEncoder(config.d_model, config.feedback_dim)
        self.lifelong = PathwayEncoder(config.d_model, config.lifelong_feature_dim)
        self.compressor = LifelongCompressor(config)
        # One learned position per memory slot: static, short-term, positive, lifelong.
        self.slots = (1, config.short_term_length, config.positive_length, config.lifelong_queries)
        self.positions = nn.Embedding(sum(self.slots), config.d_model)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.norm = RMSNorm(config.d_model)

    def forward(self, context: Context) -> tuple[Tensor, Tensor]:
        """Memory (B, S, D) and validity (B, S) bool, S <= 1 + short + positive + queries.

        Memory slots that are padding for every user of the batch are dropped (they are
        masked everywhere, so this changes no output); S therefore depends on the batch.
        """
        check_context(context, self.config)
        device = self.positions.weight.device
        if context.device != device:
            raise ValueError(
                f"the context is on {context.device} but the policy on {device}; "
                f"move it with context.to({str(device)!r})"
            )
        self._check_ids(context)
        batch = context.batch_size
        static = context.static
        if static is None:
            static = torch.full((batch, len(self.static.fields)), BLANK, device=device)
        tokens = [self.static(static)]  # (B, 1, D) pieces of the memory
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=device)]
        slot_ids = [torch.zeros(1, dtype=torch.long, device=device)]
        offset = 1
        for encoder, items, feedback, length in (
            (self.short_term, context.short_term_items, context.short_term_feedback,
             self.slots[1]),
            (self.positive, context.positive_items, context.positive_feedback, self.slots[2]),
        ):
            if items is not None:
                tokens.append(encoder(self.items(items), feedback))  # (B, T, D)
                valid.append(items != BLANK)
                last_slots = torch.arange(length - items.shape[1], length, device=device)
                slot_ids.append(last_slots + offset)
            offset += length
        if context.lifelong_items is not None and context.lifelong_items.shape[1]:
            lifelong = self.lifelong(self.items(context.lifelong_items), context.lifelong_features)
            compressed, compressed_valid = self.compressor(
                lifelong, context.lifelong_items != BLANK
            )  # (B, Q, D), (B, Q)
            tokens.append(compressed)
            valid.append(compressed_valid)
            slot_ids.append(torch.arange(compressed.shape[1], device=device) + offset)

        memory = torch.cat(tokens, dim=1)  # (B, S, D)
        memory_valid = torch.cat(valid, dim=1)  # (B, S)
        slots = torch.cat(slot_ids)  # (S,)
        used = memory_valid.any(dim=0).nonzero().squeeze(1)
        if used.shape[0] < memory.shape[1]:
            memory, memory_valid, slots = memory[:, used], memory_valid[:, used], slots[used]
        memory = memory + self.positions(slots)
        mask = padding_attention_mask(memory_valid)
        for layer in self.layers:
            memory = layer(memory, mask, memory_valid)
        return self.norm(memory), memory_valid

    def _check_ids(self, context: Context) -> None:
        """Item ids in [-1, N) with codes set, static values in [-1, cardinality): one sync."""
        checks: list[tuple[str, Tensor]] = []
        if context.static is not None:
            limits = torch.tensor(self.config.static_cardinalities, device=context.static.device)
            checks.append(("static", ((context.static < BLANK) | (context.static >= limits)).any()))
        item_codes = self.items.item_codes
        for name in ("short_term_items", "positive_items", "lifelong_items"):
            items = getattr(context, name)
            if items is None:
                continue
            in_range = (items >= BLANK) & (items < item_codes.shape[0])
            checks.append((name, ~in_range.all()))
            uncoded = (item_codes[items.clamp(0, item_codes.shape[0] - 1), 0] < 0) & (items != BLANK)
            checks.append(("item codes", uncoded.any()))
        if not checks or not torch.stack([bad for _, bad in checks]).any():
            return
        name = next(name for name, bad in checks if bad)
        if name == "static":
            raise ValueError(
                f"static holds a value outside [-1, cardinality) for cardinalities "
                f"{self.config.static_cardinalities}; use -1 for an unknown value"
            )
        if name == "item codes":
            raise ValueError(
                "the context holds items whose codes are not set; call "
                "policy.set_item_codes(codec's item -> codes table) before encoding"
            )
        raise ValueError(
            f"{name} holds ids outside [-1, num_items={item_codes.shape[0]}); use -1 for "
            "padding and build the policy with the catalog's num_items"
        )


def check_context(context: Context, config: OneRecConfig) -> None:
    """Raise a ValueError naming the pathway, its shape and the fix when a context misfits."""
    batch = context.batch_size
    if context.static is not None:
        expected = (batch, len(config.static_cardinalities))
        if tuple(context.static.shape) != expected:
            raise ValueError(
                f"static has shape {tuple(context.static.shape)}, expected {expected} "
                "(one column per STATIC_FIELDS entry)"
            )
        if context.static.dtype != torch.long:
            raise ValueError(f"static must be int64 field values, got {context.static.dtype}")
    pathways = (
        ("short_term", context.short_term_items, context.short_term_feedback,
         config.short_term_length, config.feedback_dim),
        ("positive", context.positive_items, context.positive_feedback,
         config.positive_length, config.feedback_dim),
        ("lifelong", context.lifelong_items, context.lifelong_features,
         config.lifelong_length, config.lifelong_feature_dim),
    )
    for name, items, features, length, width in pathways:
        feature_name = "lifelong_features" if name == "lifelong" else f"{name}_feedback"
        if items is None:
            if features is not None:
                raise ValueError(f"{feature_name} is given without {name}_items; give both")
            continue
        if items.dim() != 2 or items.shape[0] != batch:
            raise ValueError(
                f"{name}_items has shape {tuple(items.shape)}, expected ({batch}, T) item ids"
            )
        if items.dtype != torch.long:
            raise ValueError(f"{name}_items must be int64 item ids, got {items.dtype}")
        if items.shape[1] > length:
            raise ValueError(
                f"{name}_items holds {items.shape[1]} items but the {name} pathway holds "
                f"{length}; keep the most recent {length} (e.g. items[:, -{length}:]) or build "
                f"the policy with {name}_length={items.shape[1]}"
            )
        if features is None:
            continue
        if tuple(features.shape) != (*items.shape, width):
            raise ValueError(
                f"{feature_name} has shape {tuple(features.shape)}, expected "
                f"{(*items.shape, width)} (one row of {width} features per item)"
            )
        if not features.is_floating_point():
            raise ValueError(f"{feature_name} must be float32 features, got {features.dtype}")
