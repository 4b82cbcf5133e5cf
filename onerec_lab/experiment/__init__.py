"""The experiment layer: the lab's pipeline as a library, under every command and study.

    from onerec_lab.experiment import WorldConfig, build_world, align, evaluate

    world = build_world(WorldConfig(), "runs/world")        # cached stage by stage
    result = align(world, "ecpo", "pscore + 0.5*format", max_steps=30)
    print(evaluate(world, result.policy).true_watch_time)   # the simulator's truth

- `world.py`: `WorldConfig` -> `World` (catalog, semantic IDs, logged sessions, pre-trained
  policy, P-score), built into one folder (`layout.py`), each stage cached under a
  fingerprint of its settings and inputs (`cache.py`);
- `alignment.py`, `evaluation.py`, `pretraining.py`, `offline.py`: the operations, each
  returning a typed result;
- `methods.py`: alignment methods by name (the rewards' registry is `rewards.register`);
- `plugins.py`: a researcher's own rewards and methods, from files, modules, the
  ONEREC_LAB_PLUGINS variable or entry points;
- `pipeline.py`: alignment runs and evaluations cached inside a world's folder.
"""

from onerec_lab.experiment.alignment import AlignResult, align
from onerec_lab.experiment.evaluation import BASELINES, PROXY, evaluate, recommender
from onerec_lab.experiment.methods import METHODS, AlignmentMethod, method, register_method
from onerec_lab.experiment.plugins import PluginError, load_plugins
from onerec_lab.experiment.world import World, WorldConfig, build_world, open_world
from trainers.evaluate import Evaluation, EvaluationConfig

__all__ = [
    "BASELINES",
    "METHODS",
    "PROXY",
    "AlignResult",
    "AlignmentMethod",
    "Evaluation",
    "EvaluationConfig",
    "PluginError",
    "World",
    "WorldConfig",
    "align",
    "build_world",
    "evaluate",
    "load_plugins",
    "method",
    "open_world",
    "recommender",
    "register_method",
]
