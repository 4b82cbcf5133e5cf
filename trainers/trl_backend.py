"""A TRL backend: a decoder-only semantic-ID policy, trained by TRL's own GRPOTrainer.

TRL trains causal language models on text prompts; OneRec is an encoder-decoder fed dense
user features, which TRL has no way to pass, so our trainers (`trainers.grpo`) follow TRL's
conventions instead. This backend is the nearest model TRL can train directly, so that every
loss variant TRL offers (`grpo`, `dapo`, `dr_grpo`, `bnpo`, `cispo`, `sapo`, ...) is reachable
on the lab's world with the lab's rewards:

- vocabulary: special tokens, then one word per (level, code) (`c0_17` = code 17 of level
  0), in `rewards.SemanticIdVocabulary` order; a local `tokenizers` WordLevel tokenizer
  (nothing is downloaded);
- model: a small `LlamaForCausalLM` built from a config (random weights);
- prompt: the user's latest positive items written as their codes; completion: one item's
  L code tokens (`max_completion_length = L`);
- reward: any spec without the oracle, through `rewards.TRLRewardFunction`; the dataset's
  `user_index` column (a logged request) gives the reward its user context.

Letters used in shape comments: N prompts, H history items, L levels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.logs import LoggedSessions
from envs.spec import BLANK
from rewards import SemanticIdVocabulary, TRLRewardFunction, build

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers and TRL are imported

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


@dataclass
class TRLBackendConfig:
    """The causal policy and TRL's GRPO settings (TRL's names)."""

    output_dir: str  # TRL's output folder (its logs; checkpoints are not saved)
    max_steps: int = 2  # TRL optimizer steps
    num_generations: int = 4  # completions (items) per prompt (user)
    prompts_per_step: int = 2  # users per step: per_device_train_batch_size / num_generations
    num_prompts: int = 64  # logged requests the dataset holds
    history: int = 8  # latest positive items written in the prompt
    loss_type: str = "grpo"  # any TRL loss_type: grpo, dapo, dr_grpo, bnpo, cispo, sapo, ...
    learning_rate: float = 1e-4  # AdamW step size
    epsilon: float = 0.2  # clip range of the ratio
    beta: float = 0.0  # KL coefficient (TRL's default: none, like OneRec)
    scale_rewards: str = "group"  # "group", "batch" or "none"
    hidden_size: int = 64  # width of the small Llama
    num_layers: int = 2  # its depth
    num_heads: int = 4  # its attention heads
    seed: int = 0  # seeds the weights, the prompt rows and TRL

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 for group-relative advantages, got "
                f"{self.num_generations}"
            )
        for name in ("max_steps", "prompts_per_step", "num_prompts", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def code_words(codebook_sizes: tuple[int, ...]) -> list[str]:
    """One word per (level, code), in `SemanticIdVocabulary` order."""
    return [f"c{level}_{code}" for level, size in enumerate(codebook_sizes) for code in range(size)]


def code_tokenizer(codebook_sizes: tuple[int, ...]) -> Any:
    """A word-level `PreTrainedTokenizerFast` of the special tokens and the code words."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIAL_TOKENS, *code_words(codebook_sizes)]
    backend = Tokenizer(WordLevel({word: index for index, word in enumerate(words)},
                                  unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.padding_side = "left"  # generation continues the right end of every prompt
    return tokenizer


def causal_policy(tokenizer: Any, config: TRLBackendConfig, levels: int) -> Any:
    """A small randomly initialised `LlamaForCausalLM` over the code vocabulary (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        max_position_embeddings=(config.history + 2) * levels + 8,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LlamaForCausalLM(model_config)


def history_prompts(logs: LoggedSessions, item_codes: torch.Tensor, rows: np.ndarray,
                    history: int) -> list[str]:
    """Each logged request's latest `history` positive items as code words, oldest first."""
    positives = logs.contexts(rows)["positive_items"][:, -history:]  # (N, H), padding in front
    prompts = []
    for items in positives:
        codes = item_codes[torch.as_tensor(items[items != BLANK])]  # (H', L)
        prompts.append(" ".join(f"c{level}_{int(code)}" for item in codes
                                for level, code in enumerate(item)))
    return prompts


def train_with_trl(logs: LoggedSessions, codec: Any, reward: str, resources: Mapping[str, Any],
                   config: TRLBackendConfig) -> Any:
    """Train the causal policy with TRL's GRPOTrainer on `reward`; returns the trainer
    (its `state.log_history` holds TRL's metrics, `rewards/<name>` among them)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sizes = tuple(int(size) for size in codec.codebook_sizes)
    tokenizer = code_tokenizer(sizes)
    rows = np.random.default_rng(config.seed).choice(
        logs.num_requests, size=min(config.num_prompts, logs.num_requests), replace=False)
    dataset = Dataset.from_dict({
        "prompt": history_prompts(logs, torch.as_tensor(codec.item_codes), rows, config.history),
        "user_index": rows.tolist(),
    })
    reward_function = TRLRewardFunction(
        build(reward, codec=codec, catalog=logs.catalog, **resources), codec,
        SemanticIdVocabulary(sizes, offset=len(SPECIAL_TOKENS)), slate_size=1,
        contexts=logs.contexts)
    arguments = GRPOConfig(
        output_dir=config.output_dir, max_steps=config.max_steps,
        per_device_train_batch_size=config.num_generations * config.prompts_per_step,
        num_generations=config.num_generations, max_completion_length=len(sizes),
        learning_rate=config.learning_rate, epsilon=config.epsilon, beta=config.beta,
        loss_type=config.loss_type, scale_rewards=config.scale_rewards, seed=config.seed,
        use_vllm=False, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=causal_policy(tokenizer, config, len(sizes)),
                          reward_funcs=[reward_function], args=arguments, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    return trainer
