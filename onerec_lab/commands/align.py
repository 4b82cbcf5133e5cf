"""`onerec-lab align`: post-train a OneRec checkpoint with a registered alignment method.

    onerec-lab align --method ecpo --reward "pscore + 0.5*format" --policy CKPT \\
        --steps 50 --seed 0 --out DIR --json
    onerec-lab align --plugin my_plugin.py --method my_grpo --policy CKPT --out DIR

Methods: rsft, rwsft, grpo, ecpo, gbpo, dr_grpo, dapo, bnpo, cispo, sapo, feedback_rl, dpo and
any that a plugin registers; the options after the world's come from the chosen method's config
(`onerec-lab align --method rsft --help`). The world (catalog, pathway lengths), the next-token
co-training data and the P-score come from the logged sessions (`--logs`, default: the folder
the checkpoint was trained on). The policy is evaluated in the simulator before and after (the
same `--eval-users` users, unconstrained decoding): the proxy reward of served slates, the TRUE
watch time per session and the legality of generated codes; when the proxy rose while the truth
fell, the command says so; with `--eval-days N` the same users are also judged over N days of
`OneRec/Days-v0` (watch time over the horizon, active days, retention) before and after.
`--out` receives `checkpoint.pt` (resumed from when present), `tensorboard/`, `align.json` and
`align.md`. Data-parallel RL:

    torchrun --standalone --nproc_per_node=2 -m onerec_lab.cli -- align --policy CKPT ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from envs.days import DaysConfig
from onerec_lab.experiment import EvaluationConfig, World, align, method
from onerec_lab.experiment.alignment import LONG_TERM_FIGURES
from rewards import parse_spec
from trainers.evaluate import EVALUATION_SEED
from trainers.online import OnlineConfig

DEFAULT_METHOD = "ecpo"


@dataclass
class AlignArgs:
    """Arguments of `onerec-lab align`."""

    policy: str  # checkpoint to start from (onerec-lab pretrain, or a previous align)
    out: str  # folder for the checkpoint, TensorBoard logs and report; resumed from if it has one
    method: str = DEFAULT_METHOD  # alignment method: rsft, rwsft, grpo, ecpo, gbpo, dr_grpo,
    # dapo, bnpo, cispo, sapo, feedback_rl, dpo, rsft_logs or a plugin's
    reward: str = "pscore + 0.5*format"  # reward spec (rewards/README.md)
    oracle: bool = False  # an oracle run: the reward may read the simulator's truth (`oracle`)
    logs: str | None = None  # logged sessions (world, co-training data); default: the policy's
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    training: OnlineConfig | None = field(  # the method's config (None: its defaults);
        default=None,  # on the command line every field of it is an option
        metadata={"hidden": ("output_dir", "progress"),
                  "aliases": {"max_steps": "--steps", "users_per_step": "--users"}})
    eval_users: int = 200  # users of the before / after evaluation (the same users both times)
    eval_requests: int = 20  # most requests per evaluated session
    eval_seed: int = EVALUATION_SEED  # first user seed of the evaluation
    candidates: int = 20  # beams per request when evaluating; the top slate_size are served
    eval_days: float | None = None  # also judge the same users over this many days
    # (OneRec/Days-v0) before and after: the long-term truth beside the session's
    plugin: tuple[str, ...] = field(  # a Python file or module registering rewards/methods
        default=(), metadata={"repeatable": True})
    json: bool = False  # print one JSON object (and no progress bar)

    def __post_init__(self) -> None:
        entry = method(self.method)  # an unknown method names the known ones
        parse_spec(self.reward)  # a malformed spec fails before anything is loaded
        for name in ("eval_users", "eval_requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        self.training = entry.make_config(self.training)  # a config of another method: an error
        if self.eval_days is not None:
            DaysConfig(days=self.eval_days, session_requests=self.eval_requests)  # early error


def nested_options(options: list[str]) -> dict[str, Any]:
    """The chosen method's config class (and the values its name fixes) for `training`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--method", default=DEFAULT_METHOD)
    entry = method(parser.parse_known_args(options)[0].method)
    return {"types": {"training": entry.config_class}, "fixed": {"training": entry.fixed}}


def run(args: AlignArgs) -> dict[str, Any]:
    """Evaluate, align, evaluate again; the before / after figures and the last step's."""
    training = dataclasses.replace(args.training, progress=not args.json)  # set by __post_init__
    world = World.open(args.logs, args.policy, args.pscore)
    result = align(world, args.method, args.reward, training, start=args.policy, out=args.out,
                   oracle=args.oracle, candidates=args.candidates,
                   evaluation=EvaluationConfig(users=args.eval_users, seed=args.eval_seed,
                                               max_requests=args.eval_requests),
                   days=None if args.eval_days is None else DaysConfig(
                       days=args.eval_days, session_requests=args.eval_requests))
    if result.warning():
        print(result.warning(), file=sys.stderr)
    printed = {key: value for key, value in result.to_dict().items() if key != "history"}
    return {**printed, "first_metrics": result.history[0], "final_metrics": result.history[-1],
            "pscore": world.pscore_source}


def print_human(result: dict[str, Any]) -> None:
    """The before / after figures as a table, then the warning when there is one."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"onerec-lab align: {result['method']} on {result['reward']!r}")
    for column in ("figure", "before", "after"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name in ("true_watch_time", "proxy_reward", "legality", "session_length", "diversity",
                 "coverage"):
        table.add_row(name, f"{result[name + '_before']:.4g}", f"{result[name + '_after']:.4g}")
    for name in LONG_TERM_FIGURES:
        if f"horizon_{name}_before" in result:
            table.add_row(f"{name} over {result['before_days']['days']:g} days",
                          f"{result[f'horizon_{name}_before']:.4g}",
                          f"{result[f'horizon_{name}_after']:.4g}")
    console = Console()
    console.print(table)
    console.print(f"{result['steps']} steps, {result['seconds']:.0f} s; checkpoint "
                  f"{result['checkpoint']}")
