"""The OneRec policy: encoder + decoder, the next-token loss and log-probabilities of items.

`OneRecPolicy` holds the item -> codes table (a buffer, so checkpoints are self-contained)
and maps the item ids of a context to codes. `log_prob(context, codes)` is the quantity RL
needs: log pi(item | user) = sum over the item's L codes of log p(c_l | user, c_<l).

Training: `ntp_loss` teacher-forces [BOS, c_1, .., c_{P-1}] and predicts c_1..c_P. With MoE
layers, call `update_routing_balance()` once after every optimizer step (loss-free load
balancing moves the routing biases from the loads counted since the previous call).

Letters in shape comments: B users, G items per user (group), M items per session,
L levels, P = M x L decoded positions, K_max the largest codebook, N catalog items,
E experts, S memory tokens, D model width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from policies.codec import SemanticIdCodec
from policies.config import OneRecConfig
from policies.decoder import (
    DecoderMemory,
    OneRecDecoder,
    PrefixConstraint,
    next_code_log_probs,
)
from policies.encoder import Context, OneRecEncoder
from policies.moe import MoEFeedForward
from policies.repeat import CatalogPrefixes, RepeatMarks


class NtpOutput(NamedTuple):
    """Next-token loss with its parts and the routing statistics of the forward pass."""

    loss: Tensor  # () mean cross-entropy over all decoded positions
    level_losses: Tensor  # (L,) mean cross-entropy of each code level (detached)
    expert_load: Tensor | None  # (MoE layers, E) share of assignments per expert; None if dense
    expert_balance: Tensor | None  # () max load / mean load, averaged over MoE layers


class OneRecPolicy(nn.Module):
    """Encoder-decoder generative recommender over semantic-ID codes."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = OneRecEncoder(config)
        self.decoder = OneRecDecoder(config)
        # A codec over item_codes, rebuilt whenever the table is set or loaded (not saved):
        # codes -> item, and a ready constraint for generation after loading a checkpoint.
        self.codec: SemanticIdCodec | None = None
        self.catalog: CatalogPrefixes | None = None  # prefix counts for the repeat bias
        self.apply(_init_weights)

    @property
    def item_codes(self) -> Tensor:
        """The item -> codes table (N, L); -1 until `set_item_codes`."""
        return self.encoder.items.item_codes

    def set_item_codes(self, item_codes: Tensor | np.ndarray) -> None:
        """Install the item -> codes table (N, L), row i = item i's codes: `codec.item_codes`.

        The policy's config must have the codec's `num_items` and `codebook_sizes` (with
        the "extend" collision policy the codec may have one level more than the tokenizer).
        """
        table = torch.as_tensor(item_codes)
        expected = tuple(self.item_codes.shape)
        if tuple(table.shape) != expected:
            raise ValueError(
                f"item_codes has shape {tuple(table.shape)}, expected {expected} "
                "(num_items x levels); build the policy with the codec's num_items and "
                "codebook_sizes"
            )
        if table.is_floating_point():
            raise ValueError(f"item_codes must hold integer codes, got {table.dtype}")
        self._check_code_range(table, "item_codes")
        self.item_codes.copy_(table.to(self.item_codes.device, torch.long))
        self._rebuild_codec()

    def set_item_features(self, **features: Tensor | np.ndarray) -> None:
        """Install side features per item (N,): creator, category and/or duration_bucket ids."""
        tables = self.encoder.items.side_features
        for name, values in features.items():
            if name not in tables:
                raise ValueError(
                    f"side feature {name!r} is not enabled; build the policy with "
                    f"num_creators / num_categories / num_duration_buckets > 0 "
                    f"(enabled: {', '.join(tables) or 'none'})"
                )
            column = torch.as_tensor(values)
            size = tables[name].num_embeddings
            if column.shape != (self.config.num_items,) or column.min() < 0 or column.max() >= size:
                raise ValueError(
                    f"{name} must be {self.config.num_items} ids in [0, {size}), got shape "
                    f"{tuple(column.shape)} and range [{column.min()}, {column.max()}]"
                )
            getattr(self.encoder.items, f"item_{name}").copy_(column.long())

    def items_from_codes(self, codes: Tensor) -> Tensor:
        """Codes (..., L) -> item ids (...), -1 where no item has these codes (illegal).

        When several items share codes (a collision), the lowest item id is returned.
        """
        if self.codec is None:
            raise ValueError("item codes are not set; call policy.set_item_codes(codec.item_codes)")
        return self.codec.decode(codes)

    def encode(self, context: Context) -> tuple[Tensor, Tensor]:
        """Memory (B, S, D) and its validity (B, S) bool: run once per user, reuse for all items."""
        return self.encoder(context)

    def decoder_memory(self, context: Context) -> DecoderMemory:
        """Encode once per user (B) and precompute what every decoding step reads."""
        memory, memory_valid = self.encode(context)  # checks the context's item ids
        repeats = None
        if self.config.repeat_bias:
            if self.catalog is None:
                raise ValueError(
                    "item codes are not set; call policy.set_item_codes(codec.item_codes)"
                )
            self.catalog.to(self.item_codes.device)
            repeats = RepeatMarks(self.history_codes(context), self.catalog)
        return self.decoder.prepare_memory(memory, memory_valid, repeats=repeats)

    def history_codes(self, context: Context) -> Tensor:
        """Codes (B, T, L) of the distinct items in the context's item pathways, -1 = padding.

        T is the summed length of the short-term, positive and lifelong pathways present; an
        item in several places counts once. What the decoder's `repeat_bias` looks at.
        """
        pathways = [
            items for items in (
                context.short_term_items, context.positive_items, context.lifelong_items
            ) if items is not None
        ]
        if not pathways:
            return self.item_codes.new_full((context.batch_size, 0, self.config.num_levels), -1)
        items = torch.cat(pathways, dim=1).to(self.item_codes.device).sort(dim=1).values
        items[:, 1:].masked_fill_(items[:, 1:] == items[:, :-1], -1)  # (B, T) repeats -> padding
        codes = self.item_codes[items.clamp(min=0)]  # (B, T, L)
        return codes.masked_fill((items < 0).unsqueeze(-1), -1)

    def forward(self, context: Context, target_codes: Tensor) -> Tensor:
        """Teacher-forced logits: (B, L) -> (B, L, K_max), or (B, M, L) -> (B, M, L, K_max).

        Logits at level l beyond that level's codebook size are -inf.
        """
        sequences = self._sequences(target_codes, context.batch_size, 1, "target_codes")  # (B, P)
        memory = self.decoder_memory(context)
        logits = self.decoder(sequences[:, :-1], memory)  # (B, P, K_max)
        return logits.view(*target_codes.shape, -1)

    def ntp_loss(self, context: Context, target_codes: Tensor) -> NtpOutput:
        """Next-token cross-entropy of the target codes (B, L) or (B, M, L) given the context."""
        logits = self(context, target_codes).float()
        levels = self.config.num_levels
        token_losses = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target_codes.reshape(-1), reduction="none"
        ).view(-1, levels)  # (B M, L)
        level_losses = token_losses.mean(0)
        moe = [m for m in self.moe_layers() if m.last_stats is not None]
        expert_load = expert_balance = None
        if moe:
            expert_load = torch.stack([m.last_stats.expert_load for m in moe])  # (layers, E)
            expert_balance = torch.stack([m.last_stats.max_over_mean for m in moe]).mean()
        return NtpOutput(level_losses.mean(), level_losses.detach(), expert_load, expert_balance)

    def token_log_probs(
        self, context: Context, codes: Tensor, constraint: PrefixConstraint | None = None
    ) -> Tensor:
        """log p(c_p | user, c_<p) of every code: (B, G, L) -> (B, G, L), (B, G, M, L) alike.

        With a `constraint` (e.g. the codec) each level's distribution is renormalised over
        the codes it allows after the item's prefix, as constrained generation does; codes
        it forbids get -inf. The encoder runs once per user, shared by its G items.
        """
        batch = context.batch_size
        sequences = self._sequences(codes, batch, 2, "codes")  # (B G, P)
        memory = self.decoder_memory(context)
        logits = self.decoder(sequences[:, :-1], memory)  # (B G, P, K_max)
        levels = self.config.num_levels
        per_position = []
        for position in range(sequences.shape[1]):
            level = position % levels
            log_probs = next_code_log_probs(
                logits[:, position, : self.config.codebook_sizes[level]],
                sequences[:, position - level : position],
                constraint,
            )  # (B G, K_l)
            per_position.append(log_probs.gather(1, sequences[:, position : position + 1]))
        return torch.cat(per_position, dim=1).view(codes.shape)

    def log_prob(
        self, context: Context, codes: Tensor, constraint: PrefixConstraint | None = None
    ) -> Tensor:
        """log pi(item | user) (B, G) for codes (B, G, L): the sum of the L code log-probs.

        Session-wise models take (B, G, M, L) and return the log-probability of the session.
        """
        return self.token_log_probs(context, codes, constraint).flatten(2).sum(-1)

    def moe_layers(self) -> list[MoEFeedForward]:
        """Every MoE layer, encoder first, in a fixed order."""
        return [module for module in self.modules() if isinstance(module, MoEFeedForward)]

    def update_routing_balance(self) -> Tensor | None:
        """Loss-free balancing step of every MoE layer; call after each optimizer step.

        Returns max load / mean load of each MoE layer (layers,) over the steps since the
        previous call, or None for a dense model or when nothing was trained since.
        """
        stats = [m.update_balance() for m in self.moe_layers()]
        stats = [s for s in stats if s is not None]
        return torch.stack([s.max_over_mean for s in stats]) if stats else None

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights; a checkpoint of another shape is a ValueError saying what differs."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        mismatched = [
            f"{key}: checkpoint {tuple(state_dict[key].shape)}, policy {tuple(value.shape)}"
            for key, value in own.items()
            if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
        ]
        if mismatched or (strict and (missing or unexpected)):
            problems = [*mismatched[:3]]
            if strict and missing:
                problems.append(f"missing {', '.join(missing[:3])}")
            if strict and unexpected:
                problems.append(f"unexpected {', '.join(unexpected[:3])}")
            raise ValueError(
                "state_dict does not fit this policy (" + "; ".join(problems) + "); it was "
                "saved from another configuration: build the policy with the same preset and "
                "overrides as the checkpoint (e.g. config_for('0.015B', ...))"
            )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._rebuild_codec()
        return result

    def _rebuild_codec(self) -> None:
        """The codes -> item lookup of the current table (None while codes are unset)."""
        table = self.item_codes.cpu()
        self.codec = None if (table < 0).any() else SemanticIdCodec(
            table, self.config.codebook_sizes, collision_policy="owner"
        )
        self.catalog = None if self.codec is None else CatalogPrefixes(
            table, self.config.codebook_sizes
        )

    def _check_code_range(self, codes: Tensor, name: str) -> None:
        sizes = torch.tensor(self.config.codebook_sizes, device=codes.device)
        bad = (codes < 0) | (codes >= sizes)  # (..., L)
        if bad.any():
            level = int(bad.reshape(-1, sizes.numel()).any(0).nonzero()[0])
            raise ValueError(
                f"{name} holds a level-{level + 1} code outside [0, {int(sizes[level])}); "
                f"codes must come from a codec with codebook_sizes {self.config.codebook_sizes}"
            )

    def _sequences(self, codes: Tensor, batch: int, leading: int, name: str) -> Tensor:
        """Validate codes with `leading` axes (B or B, G) and flatten them to (rows, P)."""
        config = self.config
        item_shape = config.item_shape
        leading_desc = "(B, " if leading == 1 else "(B, G, "
        if codes.dim() != leading + len(item_shape) or tuple(codes.shape[leading:]) != item_shape:
            raise ValueError(
                f"{name} has shape {tuple(codes.shape)}, expected {leading_desc}"
                f"{', '.join(map(str, item_shape))}) for session_items={config.session_items} "
                f"and {config.num_levels} levels"
            )
        if codes.shape[0] != batch:
            raise ValueError(
                f"{name} is for {codes.shape[0]} users but the context holds {batch}; "
                "give one row per user of the context"
            )
        if codes.dtype != torch.long:
            raise ValueError(f"{name} must be int64 codes, got {codes.dtype}")
        self._check_code_range(codes, name)
        return codes.reshape(-1, config.decoder_length)  # (rows, P)


def _init_weights(module: nn.Module) -> None:
    """GPT-style initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_policy(
    config: OneRecConfig, seed: int, device: torch.device | str = "cpu"
) -> OneRecPolicy:
    """A freshly initialised policy: the same seed gives the same weights on any device.

    Weights are drawn on the CPU inside `fork_rng`, so the global random state is left as
    it was. `device="meta"` builds a weightless policy (to count parameters of big presets).
    """
    if torch.device(device).type == "meta":
        with torch.device("meta"):
            return OneRecPolicy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = OneRecPolicy(config)
    return policy.to(device)
