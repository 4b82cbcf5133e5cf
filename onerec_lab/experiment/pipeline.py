"""Runs kept inside a built world's folder as cached stages: alignment runs and evaluations.

A quickstart (or any script) that reruns into the same folder reuses an alignment run or an
evaluation when the world and the settings are unchanged, and rebuilds it, saying why, when
either changed (`cache.Manifest`): a changed `--log-users` rebuilds the logs, the
pre-training, the P-score, the alignment runs and the evaluation; an unchanged rerun reuses
them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onerec_lab.experiment.alignment import align
from onerec_lab.experiment.cache import Stage, StageEvent
from onerec_lab.experiment.evaluation import Policy, evaluate
from onerec_lab.experiment.methods import method as find_method
from onerec_lab.experiment.world import World
from trainers.evaluate import Evaluation, EvaluationConfig
from trainers.online import RUN_SETTINGS

EVALUATION = "evaluation"


def aligned_run(world: World, name: str, method: str, reward: str,
                **settings: Any) -> tuple[Path, dict[str, Any], StageEvent]:
    """`method` on `reward` from the world's pre-trained policy into DIR/`name`/, cached;
    (its checkpoint, the first and last step's metrics, what happened)."""
    layout = world.layout.run(name)
    config = find_method(method).make_config(**settings)
    recorded = {key: value for key, value in dataclasses.asdict(config).items()
                if key not in RUN_SETTINGS or key == "max_steps"}

    def build() -> dict[str, Any]:
        result = align(world, method, reward, config, out=layout.folder)
        return {"steps": result.steps, "first": result.history[0], "last": result.history[-1]}

    report, event = world.run_stage(Stage(
        name, {"method": method, "reward": reward, **recorded}, {"world": world.fingerprint},
        [layout.folder], build))
    return layout.checkpoint, report, event


def evaluated(world: World, policies: Mapping[str, Policy], evaluation: EvaluationConfig,
              reward: str, inputs: Mapping[str, str]) -> tuple[dict[str, Evaluation], StageEvent]:
    """Every policy on the same users, cached; `inputs` are fingerprints of the runs the
    policies come from (the world's is added)."""

    def build() -> dict[str, Any]:
        return {name: evaluate(world, policy, evaluation, reward).to_dict()
                for name, policy in policies.items()}

    report, event = world.run_stage(Stage(
        EVALUATION, {"evaluation": dataclasses.asdict(evaluation), "reward": reward,
                     "policies": list(policies)},
        {"world": world.fingerprint, **inputs}, [], build))
    return {name: Evaluation(**figures) for name, figures in report.items()}, event
