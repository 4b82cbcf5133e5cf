"""A world: catalog, semantic IDs, logged sessions, a pre-trained policy and a P-score.

`build_world(WorldConfig(), "runs/world")` builds the quickstart's world stage by stage into
one folder (`layout.WorldLayout`), each stage cached under a fingerprint of its settings and
inputs (`cache`): a rerun with the same settings reuses every stage and says so; a changed
setting rebuilds the stages that depend on it, and says which and why.

    semantic IDs     item embeddings (contrastive + content reconstruction) -> balanced
                     RQ-Kmeans codes                               (items, codebook, ...)
    logged sessions  the popularity policy logs, the cascade is fitted on them, then the
                     cascade logs the pre-training data              (items, log_users, ...)
    pre-training     a `preset` OneRec, next-token prediction   (semantic IDs + logs)
    P-score          the multi-tower reward model and its Pareto fusion search     (logs)

`World.open(logs=DIR, policy=CKPT, pscore=DIR)` opens a world from its parts instead (what
the commands that take `--logs`/`--policy` do).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.kuairand import generate_kuairand_catalog
from envs.logs import SESSIONS_FILE, LoggedSessions
from envs.simulator import SessionConfig
from onerec_lab.experiment.budget import catalog_memory, check_fits
from onerec_lab.experiment.cache import Manifest, Stage, StageEvent, combined_fingerprint
from onerec_lab.experiment.layout import PSCORE_FOLDER, WorldLayout
from onerec_lab.experiment.pretraining import CodecSettings, pretrain_policy
from onerec_lab.experiment.progress import StageProgress
from policies.cascade import CascadeConfig, bootstrap_cascade
from policies.item_embeddings import ItemEmbeddingConfig, train_item_embeddings
from policies.onerec import OneRecPolicy
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids
from rewards import ParetoConfig, PScoreModel, PScoreTrainConfig, fit_pscore, load_pscore
from rewards import save_pscore as save_pscore_model
from trainers.checkpoint import training_metadata
from trainers.pretrain import PretrainConfig, load_policy
from trainers.pretrain_data import LoggedExamples

# Stage names, in build order (also the keys of the manifest and of `World.reports`).
SEMANTIC_IDS, LOGGED_SESSIONS, PRETRAINING, PSCORE = (
    "semantic IDs", "logged sessions", "pre-training", "P-score")
QUICK_PSCORE = PScoreTrainConfig(epochs=1, pareto=ParetoConfig(steps=30))  # when none is given


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of a world; the defaults are the quickstart's."""

    items: int = 3_000  # catalog size; 3k items keep the whole job within minutes on 2 cores
    codebook: int = 32  # codes per level (3 levels); 32^3 codes comfortably address 3k items
    embedding_steps: int = 300  # item-embedding optimiser steps
    log_users: int = 600  # simulated users per logging round (popular, then cascade rounds)
    log_requests: int = 10  # most requests per logged session
    cascade_steps: int = CascadeConfig.retrieval_steps  # optimiser steps of each cascade model
    # (two-tower retrieval, ranker) fitted on the popular policy's logs
    pretrain_steps: int = 600  # next-token pre-training steps of the OneRec (150 steps
    # left it below the cascade that logged its data; 600 put it above)
    pscore_epochs: int = 8  # P-score passes over the logs (2 gave a proxy that ECPO hacked)
    preset: str = "tiny"  # OneRec size preset of the pre-trained policy (policies.config)
    seed: int = 0  # seeds every stage; the same seed reproduces the same world

    def __post_init__(self) -> None:
        if self.items < 2 * self.codebook:
            raise ValueError(
                f"items ({self.items}) must be at least twice codebook ({self.codebook}) for "
                "k-means to have data per code; raise --items or lower --codebook"
            )
        for name in ("embedding_steps", "log_users", "log_requests", "cascade_steps",
                     "pretrain_steps", "pscore_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def make_catalog(items: int, seed: int, kuairand: str | None = None) -> Catalog:
    """A synthetic catalog of `items` items, or one calibrated on KuaiRand-Pure's CSVs."""
    check_fits(catalog_memory(items), f"a catalog of {items} items", "lower --items")
    config = CatalogConfig(num_items=items)
    if kuairand is not None:
        return generate_kuairand_catalog(kuairand, config, seed)
    return generate_synthetic_catalog(config, seed)


class World:
    """A world loaded for experiments: its logs and catalog, the pre-trained policy, the
    P-score, the cascade, and (for a built world) its stage manifest."""

    def __init__(self, logs_folder: Path, *, pretrained: Path | None = None,
                 pscore: Path | None = None, cascade: Path | None = None,
                 fingerprint: str | None = None, layout: WorldLayout | None = None,
                 config: WorldConfig | None = None, manifest: Manifest | None = None,
                 events: tuple[StageEvent, ...] = ()) -> None:
        self.logs_folder = logs_folder
        self.logs = LoggedSessions.load(logs_folder)
        self.pretrained_path, self.pscore_path, self.cascade_path = pretrained, pscore, cascade
        self.given_fingerprint = fingerprint
        self.layout, self.config, self.manifest = layout, config, manifest
        self.events = events  # what this build reused and rebuilt
        self.pscore_source = "not used"  # where the P-score came from, once loaded

    @classmethod
    def open(cls, logs: str | Path | None = None, policy: str | Path | None = None,
             pscore: str | Path | None = None) -> World:
        """A world from its parts: a logs folder (default: the one `policy` was trained on),
        a policy checkpoint, a P-score folder (default LOGS/pscore when there)."""
        if logs is None:
            if policy is None:
                raise ValueError("give a logs folder (--logs DIR) or a policy checkpoint that "
                                 "records one")
            logs = training_metadata(policy).get("logs")
            if logs is None:
                raise ValueError(
                    f"{policy} does not record its logged sessions; pass --logs DIR (the "
                    "folder it was pre-trained on)"
                )
        logs = Path(logs)
        if pscore is None and (logs / PSCORE_FOLDER).is_dir():  # where `reward fit` writes
            pscore = logs / PSCORE_FOLDER
        beside = WorldLayout(logs.parent)  # a world folder's cascade sits beside its logs
        cascade = beside.cascade if logs.name == beside.logs.name and beside.cascade.is_file() \
            else None
        world = cls(logs, pretrained=None if policy is None else Path(policy),
                    pscore=None if pscore is None else Path(pscore), cascade=cascade)
        if policy is not None:
            world.check_same_catalog(trained_catalog(policy), Path(policy), "was trained",
                                     "--policy")
        return world

    @property
    def catalog_fingerprint(self) -> str:
        """The world's identity: a content hash of its catalog."""
        return self.logs.catalog_fingerprint

    def check_same_catalog(self, recorded: str | None, artefact: Path, done: str,
                           option: str) -> None:
        """Refuse an artefact of another world: one whose recorded catalog fingerprint is not
        this world's (an artefact from before fingerprints records none: not checked)."""
        if recorded is None or recorded == self.catalog_fingerprint:
            return
        raise ValueError(
            f"{artefact} {done} in another world (catalog {recorded}) than the logs "
            f"{self.logs_folder} (catalog {self.catalog_fingerprint}); pass the logs it "
            f"belongs to (--logs) or a {option} built on these logs"
        )

    @functools.cached_property
    def logs_fingerprint(self) -> str:
        """A hash of the logs' files (sessions and catalog): the same however the world was
        opened, so a run trained on other logs is recognised."""
        digest = hashlib.sha256()
        for path in sorted(self.logs_folder.glob("*.npz")):
            with path.open("rb") as handle:
                for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """What the world's runs depend on: a built world's stage fingerprints combined, or
        the logs' hash for a world opened from its parts."""
        return self.given_fingerprint or self.logs_fingerprint

    @property
    def catalog(self) -> Catalog:
        return self.logs.catalog

    @property
    def session_config(self) -> SessionConfig:
        return self.logs.session_config()

    @functools.cached_property
    def examples(self) -> LoggedExamples:
        """The logs' high-quality exposures: next-token co-training data of RL runs."""
        return LoggedExamples(self.logs, source=f"logs {self.logs_folder}")

    @functools.cached_property
    def pretrained(self) -> OneRecPolicy:
        """The pre-trained policy (loaded once; align and evaluate copy it)."""
        if self.pretrained_path is None:
            raise ValueError("this world has no pre-trained policy; open it with a policy "
                             "checkpoint (--policy CKPT)")
        return self.check_policy(load_policy(self.pretrained_path), self.pretrained_path)

    def policy_at(self, path: str | Path) -> OneRecPolicy:
        """The policy of a checkpoint (or run folder), checked against this world: its
        catalog record and item count. The world's own policy is read once (`pretrained`),
        as `open` already checked its record."""
        if self.pretrained_path is not None and Path(path) == self.pretrained_path:
            return self.pretrained
        self.check_same_catalog(trained_catalog(path), Path(path), "was trained", "policy")
        return self.check_policy(load_policy(path), path)

    def check_policy(self, policy: OneRecPolicy, source: Path | str) -> OneRecPolicy:
        """`policy` when it serves this world's catalog (its item count), else an error."""
        if policy.config.num_items != self.catalog.num_items:
            raise ValueError(
                f"{source} is a policy over {policy.config.num_items} items, and the logs "
                f"{self.logs_folder} hold a catalog of {self.catalog.num_items}; pass the logs "
                "it was trained on (--logs) or a policy trained on these logs"
            )
        return policy

    @functools.cached_property
    def pscore(self) -> PScoreModel:
        """The fitted P-score, or a quick fit on the logs (1 epoch) when the world has none."""
        if self.pscore_path is not None:
            self.pscore_source = str(self.pscore_path)
            model = load_pscore(self.pscore_path)
            self.check_same_catalog(model.catalog_fingerprint, self.pscore_path, "was fitted",
                                    "--pscore")
            return model
        self.pscore_source = ("fitted quickly on these logs (1 epoch); pass --pscore FOLDER "
                              "from `reward fit`")
        return fit_pscore(self.logs, self.catalog, QUICK_PSCORE).model

    def reward_resources(self, pscore: PScoreModel | None = None,
                         uses_pscore: bool = True) -> dict[str, Any]:
        """What `rewards.build` may need here: the P-score (the world's, or `pscore`; only
        loaded when `uses_pscore`) and the catalog."""
        model = pscore if pscore is not None else (self.pscore if uses_pscore else None)
        return {"pscore_model": model, "catalog": self.catalog}

    def run_stage(self, stage: Stage) -> tuple[dict[str, Any], StageEvent]:
        """Run a stage in this world's manifest (e.g. a quickstart's alignment runs)."""
        if self.manifest is None:
            raise ValueError("only a built world (build_world) keeps stages")
        record, event = self.manifest.run(stage)
        return record.report, event

    def report(self, name: str) -> dict[str, Any]:
        """What a built stage reported (e.g. the P-score's AUCs)."""
        if self.manifest is None or name not in self.manifest.records:
            raise ValueError(f"this world has no stage {name!r}")
        return self.manifest.records[name].report


def trained_catalog(checkpoint: str | Path) -> str | None:
    """The catalog fingerprint of the world a checkpoint was trained in: recorded in it, or,
    for a checkpoint from before fingerprints, that of the logs folder it records (None
    when neither is known)."""
    metadata = training_metadata(checkpoint)
    if metadata.get("catalog") is not None:
        return metadata["catalog"]
    logs = metadata.get("logs")
    if logs is not None and (Path(logs) / SESSIONS_FILE).is_file():
        return LoggedSessions.load(logs).catalog_fingerprint
    return None


def build_world(config: WorldConfig, folder: str | Path,
                progress: StageProgress | None = None) -> World:
    """Build (or reuse) every stage of the world into `folder`; the loaded world."""
    layout = WorldLayout(Path(folder))
    progress = progress or StageProgress("world", quiet=True)
    manifest = Manifest(layout.manifest)
    catalog = functools.cache(lambda: make_catalog(config.items, config.seed))
    seed = config.seed

    def run(title: str, stage: Stage) -> str:
        with progress.stage(title) as line:
            record, event = manifest.run(stage)
            line.outcome = event.outcome
        events.append(event)
        return record.fingerprint

    events: list[StageEvent] = []
    ids = run("semantic IDs: embeddings + balanced RQ-Kmeans", Stage(
        SEMANTIC_IDS, {"items": config.items, "codebook": config.codebook,
                       "embedding_steps": config.embedding_steps, "seed": seed},
        {}, [layout.codec], lambda: _semantic_ids(config, catalog(), layout)))
    logs = run("logged sessions: popular -> cascade -> cascade logs", Stage(
        LOGGED_SESSIONS, {"items": config.items, "log_users": config.log_users,
                          "log_requests": config.log_requests,
                          "cascade_steps": config.cascade_steps, "seed": seed},
        {}, [layout.sessions, layout.cascade],
        lambda: _logged_sessions(config, catalog(), layout)))
    pretrained = run("pre-training (next-token prediction)", Stage(
        PRETRAINING, {"preset": config.preset, "steps": config.pretrain_steps, "seed": seed},
        {SEMANTIC_IDS: ids, LOGGED_SESSIONS: logs}, [layout.pretrained.folder],
        lambda: _pretrain(config, layout, progress.inner_progress)))
    pscore = run("P-score: multi-tower fit + Pareto fusion search", Stage(
        PSCORE, {"epochs": config.pscore_epochs, "seed": seed}, {LOGGED_SESSIONS: logs},
        [layout.pscore], lambda: _fit_pscore(config, layout)))
    return World(layout.logs, pretrained=layout.pretrained.checkpoint, pscore=layout.pscore,
                 cascade=layout.cascade,
                 fingerprint=combined_fingerprint([ids, logs, pretrained, pscore]),
                 layout=layout, config=config, manifest=manifest, events=tuple(events))


def open_world(folder: str | Path) -> World:
    """A world `build_world` completed in `folder`, without building anything."""
    layout = WorldLayout(Path(folder))
    manifest = Manifest(layout.manifest)
    stages = (SEMANTIC_IDS, LOGGED_SESSIONS, PRETRAINING, PSCORE)
    incomplete = [name for name in stages
                  if name not in manifest.records or not manifest.records[name].complete]
    if incomplete:
        raise ValueError(f"{folder} holds no complete world (stages {', '.join(incomplete)} "
                         "missing); build it with build_world")
    return World(layout.logs, pretrained=layout.pretrained.checkpoint, pscore=layout.pscore,
                 cascade=layout.cascade,
                 fingerprint=combined_fingerprint([manifest.records[name].fingerprint
                                                   for name in stages]),
                 layout=layout, manifest=manifest)


def _semantic_ids(config: WorldConfig, catalog: Catalog, layout: WorldLayout) -> dict[str, Any]:
    """Item embeddings (contrastive + content reconstruction) -> balanced RQ-Kmeans codec."""
    pairs = catalog.coengaged_pairs(10 * config.items, np.random.default_rng(config.seed))
    embeddings = train_item_embeddings(
        config.items, pairs, ItemEmbeddingConfig(steps=config.embedding_steps, seed=config.seed),
        content=catalog.content,
    )
    quantizer = RQKMeansConfig(codebook_sizes=(config.codebook,) * 3, balanced=True,
                               seed=config.seed)
    codec, report, _ = build_semantic_ids(embeddings, quantizer)
    codec.catalog_fingerprint = catalog.fingerprint()
    layout.logs.mkdir(parents=True, exist_ok=True)
    codec.save(layout.codec)
    return report.to_dict()


def _logged_sessions(config: WorldConfig, catalog: Catalog, layout: WorldLayout) -> dict[str, Any]:
    """Popular policy logs -> fit the cascade -> the cascade logs the pre-training data."""
    cascade_config = CascadeConfig(retrieval_steps=config.cascade_steps,
                                   ranking_steps=config.cascade_steps, seed=config.seed)
    cascade, rounds = bootstrap_cascade(catalog, cascade_config,
                                        config.log_users, config.log_requests, config.seed,
                                        rounds=1)
    layout.folder.mkdir(parents=True, exist_ok=True)
    cascade.save(layout.cascade)
    rounds[-1].save(layout.logs)
    return {"rounds": len(rounds), "requests": int(rounds[-1].num_requests)}


def _pretrain(config: WorldConfig, layout: WorldLayout, progress: bool) -> dict[str, Any]:
    run = pretrain_policy(layout.pretrained.folder,
                          PretrainConfig(max_steps=config.pretrain_steps, seed=config.seed,
                                         progress=progress),
                          logs=layout.logs, preset=config.preset, codec=CodecSettings())
    return {"initial_loss": run.result.initial_loss, "final_loss": run.result.final_loss,
            "parameters": run.parameters}


def _fit_pscore(config: WorldConfig, layout: WorldLayout) -> dict[str, Any]:
    logs = LoggedSessions.load(layout.logs)
    fit = fit_pscore(logs, logs.catalog, PScoreTrainConfig(
        epochs=config.pscore_epochs, seed=config.seed, pareto=ParetoConfig(seed=config.seed)))
    save_pscore_model(fit.model, layout.pscore, fit.report, logs.catalog_fingerprint)
    return fit.report
