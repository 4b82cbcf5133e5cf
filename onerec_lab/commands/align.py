"""`onerec-lab align`: post-train a OneRec checkpoint with RSFT, GRPO, ECPO, Dr. GRPO or DPO.

    onerec-lab align --method ecpo --reward "pscore + 0.5*format" --policy CKPT \\
        --steps 50 --seed 0 --out DIR --json

The world (catalog, pathway lengths), the next-token co-training data and the P-score come
from the logged sessions (`--logs`, default: the folder the checkpoint was trained on). The
policy is evaluated in the simulator before and after (the same `--eval-users` users, with
unconstrained decoding): the proxy reward of served slates, the TRUE watch time per session
and the legality of generated codes, so a gain of the proxy that the truth does not share
(reward hacking) is visible in the printed figures and in TensorBoard's curves.

`--out` receives `checkpoint.pt` (loadable like a pre-training checkpoint, resumed from when
present), `tensorboard/`, `align.json` and `align.md`. Data-parallel RL:

    torchrun --standalone --nproc_per_node=2 -m onerec_lab.cli -- align --policy CKPT ...
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from envs.logs import LoggedSessions
from policies.onerec import OneRecPolicy
from rewards import (
    ParetoConfig,
    PScoreModel,
    PScoreTrainConfig,
    build,
    fit_pscore,
    load_pscore,
    parse_spec,
)
from trainers.checkpoint import read_checkpoint
from trainers.dpo import DPOConfig, DPOTrainer
from trainers.evaluate import (
    EVALUATION_SEED,
    EvaluationConfig,
    OneRecRecommender,
    evaluate,
    evaluation_markdown,
)
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.online import OnlineConfig, OnlineTrainer
from trainers.pretrain import (
    CHECKPOINT_FILE,
    TENSORBOARD_DIR,
    PretrainConfig,
    load_policy,
    pretrain,
    process_rank,
)
from trainers.pretrain_data import LoggedExamples
from trainers.rsft import RSFTConfig, RSFTTrainer, rsft_examples

METHODS = ("rsft", "grpo", "ecpo", "dr_grpo", "dpo")


@dataclass
class AlignArgs:
    """Arguments of `onerec-lab align`."""

    policy: str  # checkpoint to start from (onerec-lab pretrain, or a previous align)
    out: str  # folder for the checkpoint, TensorBoard logs and report; resumed from if it has one
    method: Literal["rsft", "grpo", "ecpo", "dr_grpo", "dpo"] = "ecpo"  # alignment method
    reward: str = "pscore + 0.5*format"  # reward spec (rewards/README.md); oracle = the truth
    logs: str | None = None  # logged sessions (world, co-training data); default: the policy's
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    steps: int = 50  # steps (one rollout each)
    seed: int = 0  # seeds the users, rollouts and batches of the run
    users: int = 16  # users per step and process (TRL's prompts)
    num_generations: int = 16  # items per user (G); the report used 512
    learning_rate: float = 1e-4  # AdamW step size
    epsilon: float = 0.2  # clip range of the ratio (grpo, ecpo, dr_grpo)
    delta: float = 0.1  # ECPO's early clip above 1 + epsilon (the report's 0.1)
    num_iterations: int = 1  # updates per rollout; > 1 moves the ratio away from 1
    rollout: Literal["beam", "sampling"] = "beam"  # beam search of width G, or sampling
    reference: Literal["current", "pretrained"] = "current"  # pi_old: on-policy or frozen start
    ntp_weight: float = 1.0  # weight of the next-token loss on logged exposures (co-training)
    format_selection_k: int = 0  # K > 0: the report's format rule (K random legal samples
    # get the format weight as advantage); 0: format is a plain reward term
    keep_fraction: float = 0.5  # rsft: share of each group (or of the logged sessions) kept
    rsft_data: Literal["rollouts", "logs"] = "rollouts"  # rsft: best rollouts, or the report's
    # logged variant (drop the bottom sessions by play duration, then next-token training)
    beta: float = 0.1  # dpo: inverse temperature
    eval_users: int = 200  # users of the before / after evaluation (the same users both times)
    eval_requests: int = 20  # most requests per evaluated session
    eval_seed: int = EVALUATION_SEED  # first user seed of the evaluation
    candidates: int = 20  # beams per request when evaluating; the top slate_size are served
    device: str | None = None  # cpu, cuda, cuda:1...; default: the GPU of this rank if any
    json: bool = False  # print one JSON object (and no progress bar)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        parse_spec(self.reward)  # a malformed spec fails before anything is loaded
        for name in ("steps", "users", "eval_users", "eval_requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        _online_config(self)  # the method's own checks, before anything is loaded


def logs_folder(policy_path: str, logs: str | None) -> str:
    """`logs`, or the folder the checkpoint was trained on; a clear error when neither."""
    if logs is not None:
        return logs
    recorded = read_checkpoint(policy_path).extra.get("logs")
    if recorded is None:
        raise ValueError(
            f"{policy_path} does not record its logged sessions; pass --logs DIR (the folder "
            "it was pre-trained on)"
        )
    return recorded


def pscore_model(spec: str, folder: str | None, logs_dir: str,
                 logs: LoggedSessions) -> PScoreModel | None:
    """The P-score a spec needs: `folder`, else LOGS/pscore, else a quick fit (1 epoch)."""
    if not any(call.name == "pscore" for _, call in parse_spec(spec).terms):
        return None
    path = Path(folder) if folder else Path(logs_dir) / "pscore"
    if folder or path.is_dir():
        return load_pscore(path)
    return fit_pscore(logs, logs.catalog,
                      PScoreTrainConfig(epochs=1, pareto=ParetoConfig(steps=30))).model


def _online_config(args: AlignArgs) -> OnlineConfig:
    shared = {
        "learning_rate": args.learning_rate, "max_steps": args.steps, "users_per_step": args.users,
        "num_generations": args.num_generations, "num_iterations": args.num_iterations,
        "rollout": args.rollout, "reference": args.reference, "ntp_weight": args.ntp_weight,
        "seed": args.seed, "output_dir": args.out, "device": args.device,
        "progress": not args.json,
    }
    if args.method == "rsft":
        return RSFTConfig(keep_fraction=args.keep_fraction, **shared)
    if args.method == "dpo":
        return DPOConfig(beta=args.beta, **shared)
    return GRPOConfig(loss_type=args.method, epsilon=args.epsilon, delta=args.delta,
                      format_selection_k=args.format_selection_k, **shared)


def _train(args: AlignArgs, policy: OneRecPolicy, logs: LoggedSessions, logs_dir: str,
           pscore: PScoreModel | None) -> dict[str, Any]:
    """Run the method; the last step's metrics and where the curves went."""
    examples = LoggedExamples(logs, source=f"logs {logs_dir}")
    if args.method == "rsft" and args.rsft_data == "logs":
        result = pretrain(policy, rsft_examples(logs, args.keep_fraction), PretrainConfig(
            learning_rate=args.learning_rate, max_steps=args.steps, warmup_steps=0,
            seed=args.seed, output_dir=args.out, device=args.device, progress=not args.json))
        return {"final_ntp_loss": result.final_loss, "resumed_from_step": result.resumed_from_step}
    trainers: dict[str, type[OnlineTrainer]] = {
        "rsft": RSFTTrainer, "dpo": DPOTrainer, "grpo": GRPOTrainer, "ecpo": GRPOTrainer,
        "dr_grpo": GRPOTrainer,
    }
    trainer = trainers[args.method](
        policy, args.reward, {"pscore_model": pscore, "catalog": logs.catalog}, logs.catalog,
        logs.session_config(), _online_config(args), examples,
        metadata={"logs": str(Path(logs_dir).resolve()), "reward": args.reward})
    result = trainer.train()
    return {"final_metrics": result.history[-1], "resumed_from_step": result.resumed_from_step,
            "first_metrics": result.history[0]}


def run(args: AlignArgs) -> dict[str, Any]:
    """Evaluate, align, evaluate again; return the before / after figures."""
    started = time.perf_counter()
    logs_dir = logs_folder(args.policy, args.logs)
    logs = LoggedSessions.load(logs_dir)
    policy = load_policy(args.policy)
    pscore = pscore_model(args.reward, args.pscore, logs_dir, logs)
    proxy = build(args.reward, pscore_model=pscore, codec=policy.codec, catalog=logs.catalog)
    session_config = logs.session_config()
    evaluation = EvaluationConfig(users=args.eval_users, seed=args.eval_seed,
                                  max_requests=args.eval_requests)

    def measure() -> dict[str, Any]:
        recommender = OneRecRecommender(policy.cpu(), session_config.slate_size, args.candidates)
        return evaluate(recommender, logs.catalog, session_config, evaluation, proxy)

    before = measure()
    training = _train(args, policy, logs, logs_dir, pscore)
    after = measure()
    result = {
        "method": args.method,
        "reward": args.reward,
        **{f"{name}_{when}": figures[key] for name, key in (
            ("proxy_reward", "proxy_reward"), ("true_watch_time", "true_watch_time"),
            ("legality", "legality"), ("session_length", "session_length"),
            ("diversity", "diversity"), ("coverage", "coverage"))
           for when, figures in (("before", before), ("after", after))},
        "before": before,
        "after": after,
        **training,
        "steps": args.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(Path(args.out) / CHECKPOINT_FILE),
        "tensorboard": str(Path(args.out) / TENSORBOARD_DIR),
        "args": asdict(args),
    }
    if process_rank() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "align.json").write_text(json.dumps(result, indent=2, default=str))
        (out / "align.md").write_text(
            f"# onerec-lab align: {args.method} on `{args.reward}`\n\n"
            + evaluation_markdown({"before": before, f"after {args.method}": after}))
    return result
