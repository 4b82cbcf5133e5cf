"""Align a world's policy with a method on a reward, and say what happened to the truth.

    result = align(world, "ecpo", "pscore + 0.5*format", max_steps=30,
                   evaluation=EvaluationConfig(users=200))
    result.after.true_watch_time, result.warning()

The method comes from the registry (`methods.py`: rsft, rwsft, grpo, ecpo, gbpo, dr_grpo, dapo,
bnpo, cispo, sapo, feedback_rl, dpo and any plugin's), its config from `config` or the method's
defaults with `settings` replaced. The reward is a spec (`rewards/README.md`). A reward that
reads the simulator's truth (the oracle) is refused unless the run declares itself an oracle
run (`oracle=True`): a proxy run must never see the truth. With `evaluation`, the policy is
evaluated before and after on the same users, and the result says plainly when the proxy rose
while the truth fell.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.days import DaysConfig
from envs.files import atomic_write_text, file_fingerprint
from onerec_lab.experiment.evaluation import (
    PROXY,
    evaluate,
    needs_pscore,
    proxy_reward,
    recommender,
)
from onerec_lab.experiment.layout import RunLayout
from onerec_lab.experiment.methods import method as find_method
from onerec_lab.experiment.world import World
from policies.onerec import OneRecPolicy
from rewards import PScoreModel, RewardModel, truth_terms
from trainers.checkpoint import training_metadata
from trainers.evaluate import Evaluation, EvaluationConfig, evaluation_markdown
from trainers.evaluate_days import LongTermEvaluation, evaluate_days, long_term_markdown
from trainers.pretrain import process_rank

LONG_TERM_FIGURES = ("watch_time", "sessions", "active_days", "next_day_retention",
                     "return_rate", "churn_rate", "coverage")  # flattened into to_dict()
HACKING_STANDARD_ERRORS = 2.0  # a fall of the truth counts when beyond this many standard errors


@dataclass(frozen=True)
class AlignResult:
    """What an alignment run did: its curve, and the truth before and after."""

    method: str
    reward: str  # the spec optimised
    history: list[dict[str, float]]  # every step's metrics (TensorBoard's scalars)
    steps: int  # steps done in total
    resumed_from_step: int  # the checkpoint's step this run started from (0: a fresh run)
    seconds: float  # wall time, evaluations included
    checkpoint: str | None  # where the trained policy was saved (None without `out`)
    world: str  # the fingerprint of the world it was trained in
    oracle_run: bool  # whether the run was allowed to read the truth
    config: dict[str, Any]  # the method's config
    before: Evaluation | None = None  # the starting policy's evaluation (None: not asked)
    after: Evaluation | None = None  # the trained policy's, on the same users
    before_days: LongTermEvaluation | None = None  # over days (None: not asked)
    after_days: LongTermEvaluation | None = None  # the trained policy's, the same users
    policy: OneRecPolicy | None = field(default=None, repr=False, compare=False)

    @property
    def proxy_rose_truth_fell(self) -> bool | None:
        """True when the proxy of the served slates rose while the true watch time fell by
        more than HACKING_STANDARD_ERRORS standard errors (None: no before/after figures)."""
        before, after = self.before, self.after
        if before is None or after is None or before.proxy_reward is None \
                or after.proxy_reward is None:
            return None
        error = math.hypot(before.true_watch_time_sem, after.true_watch_time_sem)
        fell = after.true_watch_time < before.true_watch_time - HACKING_STANDARD_ERRORS * error
        return after.proxy_reward > before.proxy_reward and fell

    def warning(self) -> str | None:
        """One plain sentence when the proxy rose while the truth fell, else None."""
        if not self.proxy_rose_truth_fell:
            return None
        before, after = self.before, self.after
        return (
            f"warning: the proxy rose ({before.proxy_reward:.3f} -> {after.proxy_reward:.3f}) "
            f"while the true watch time fell ({before.true_watch_time:.0f} -> "
            f"{after.true_watch_time:.0f} s per session): the policy learned to please the "
            "proxy, not the users (reward hacking); fit the P-score on more logs, keep more "
            "next-token co-training, or train fewer steps"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON values: the figures, the flat `<figure>_before/_after` pairs, the warning."""
        result = {key: value for key, value in asdict(self).items() if key != "policy"}
        for when, figures in (("before", self.before), ("after", self.after)):
            if figures is not None:
                for name in ("proxy_reward", "true_watch_time", "legality", "session_length",
                             "diversity", "coverage"):
                    result[f"{name}_{when}"] = getattr(figures, name)
        for when, figures in (("before", self.before_days), ("after", self.after_days)):
            if figures is not None:
                for name in LONG_TERM_FIGURES:
                    result[f"horizon_{name}_{when}"] = getattr(figures, name)
        result["proxy_rose_truth_fell"] = self.proxy_rose_truth_fell
        result["warning"] = self.warning()
        return result


def align(world: World, method: str, reward: str | RewardModel = PROXY, config: Any = None, *,
          start: OneRecPolicy | str | Path | None = None, pscore: PScoreModel | None = None,
          out: str | Path | None = None, oracle: bool = False,
          evaluation: EvaluationConfig | None = None, candidates: int = 20,
          days: DaysConfig | None = None, **settings: Any) -> AlignResult:
    """Train a copy of `start` (default: the world's pre-trained policy) with `method` on
    `reward` (a spec or a built reward); `settings` are fields of the method's config. With
    `out`, the run writes its checkpoint (resumed from when there, if trained on the same
    logs), TensorBoard, `align.json` and `align.md` there. With `evaluation` and `days`, the
    same users are also judged over that many days before and after (`OneRec/Days-v0`, the
    long-term truth beside the session's)."""
    started = time.perf_counter()
    entry = find_method(method)
    if out is not None:
        settings["output_dir"] = str(out)
    config = entry.make_config(config, **settings)
    resources = world.reward_resources(pscore, needs_pscore(reward))
    if getattr(config, "legacy_share", 0) > 0:  # the logging policy's exposures (OneRec-V2)
        resources["legacy_policy"] = recommender(world, "cascade")
    readers = truth_terms(proxy_reward(world, reward, resources["pscore_model"]))
    if readers and not oracle:
        raise ValueError(
            f"reward {getattr(reward, 'name', reward)!r} reads the simulator's truth "
            f"({', '.join(readers)}); a proxy run "
            "may not. Declare an oracle run (oracle=True, --oracle) to measure what "
            "optimising the truth itself gives"
        )
    if out is not None:
        _check_same_start(RunLayout(Path(out)), world, _start_record(world, start))
    policy = copy.deepcopy(_policy(world, start))
    measure = None if evaluation is None else (
        lambda: evaluate(world, policy, evaluation, reward, resources["pscore_model"],
                         candidates))
    before = None if measure is None else measure()
    measure_days = None if evaluation is None or days is None else (
        lambda: evaluate_days(recommender(world, policy, candidates), world.catalog,
                              world.session_config, days, evaluation.users, evaluation.seed,
                              proxy_reward(world, reward, resources["pscore_model"])))
    before_days = None if measure_days is None else measure_days()
    trainer = entry.trainer(
        policy, reward, resources, world.catalog, world.session_config, config, world.examples,
        metadata={"logs": str(world.logs_folder.resolve()), "method": method,
                  "catalog": world.catalog_fingerprint, **_start_record(world, start),
                  "world": world.fingerprint, "logs_fingerprint": world.logs_fingerprint,
                  "oracle_run": oracle})
    outcome = trainer.train()
    after = None if measure is None else measure()
    after_days = None if measure_days is None else measure_days()
    result = AlignResult(
        method=method, reward=trainer.reward, history=outcome.history, steps=outcome.steps,
        resumed_from_step=outcome.resumed_from_step,
        seconds=round(time.perf_counter() - started, 1), checkpoint=outcome.checkpoint,
        world=world.fingerprint, oracle_run=oracle, config=json.loads(json.dumps(
            asdict(config), default=str)),
        before=before, after=after, before_days=before_days, after_days=after_days,
        policy=policy)
    if out is not None and process_rank() == 0:
        _write_report(RunLayout(Path(out)), result)
    return result


def _policy(world: World, start: OneRecPolicy | str | Path | None) -> OneRecPolicy:
    if start is None:
        return world.pretrained
    if isinstance(start, OneRecPolicy):
        return world.check_policy(start, "the policy given")
    return world.policy_at(start)


def _start_record(world: World, start: OneRecPolicy | str | Path | None) -> dict[str, str]:
    """The starting checkpoint's path and content hash ({}: a policy object, not a file)."""
    path = world.pretrained_path if start is None else start
    if path is None or isinstance(path, OneRecPolicy):
        return {}
    path = Path(path)
    path = RunLayout(path).checkpoint if path.is_dir() else path  # a run folder: its checkpoint
    return {"start": str(path), "start_sha256": file_fingerprint(path)}


def _check_same_start(layout: RunLayout, world: World, start: dict[str, str]) -> None:
    """A checkpoint in `out` trained on other logs, or from another starting policy, would be
    resumed as if it were this run's (a checkpoint from before these records has none: it is
    not checked)."""
    if not layout.checkpoint.is_file():
        return
    recorded = training_metadata(layout.checkpoint)
    if recorded.get("logs_fingerprint", world.logs_fingerprint) != world.logs_fingerprint:
        raise ValueError(
            f"{layout.checkpoint} was trained in another world (on the logs "
            f"{recorded.get('logs')}, fingerprint {recorded['logs_fingerprint']}; these logs: "
            f"{world.logs_fingerprint}); pass another output folder"
        )
    if "start_sha256" in recorded and start \
            and recorded["start_sha256"] != start["start_sha256"]:
        raise ValueError(
            f"{layout.checkpoint} continues a run that started from another policy "
            f"({recorded['start']}, sha256 {recorded['start_sha256']}) than {start['start']} "
            f"(sha256 {start['start_sha256']}); pass another output folder (--out)"
        )


def _write_report(layout: RunLayout, result: AlignResult) -> None:
    layout.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.report("align", "json"),
                      json.dumps(result.to_dict(), indent=2, default=str))
    lines = [f"# onerec-lab align: {result.method} on `{result.reward}`", ""]
    if result.before is not None and result.after is not None:
        lines.append(evaluation_markdown({"before": result.before,
                                          f"after {result.method}": result.after}))
    if result.before_days is not None and result.after_days is not None:
        lines += ["", f"Over {result.before_days.days:g} days (OneRec/Days-v0):", "",
                  long_term_markdown({"before": result.before_days,
                                      f"after {result.method}": result.after_days})]
    if result.warning():
        lines += ["", f"**{result.warning()}**"]
    atomic_write_text(layout.report("align", "md"), "\n".join(lines) + "\n")
