"""A stable-baselines3 PPO agent that picks slates from retrieved candidates.

The agent acts in `envs.candidate_wrapper.CandidateSlateEnv`: N candidates per request, one
score each, the S best served. `CandidateSlateExtractor` reads the Dict observation the way
the cascade's user tower does (pathway items through the catalog's observable features,
pooled with feedback weights, plus static-feature embeddings), then scores every candidate
with one shared MLP over [user, candidate, user * candidate]. Its output starts with those N
scores and ends with the user vector and the pooled candidates that the value head reads.

`CandidateScoringPolicy` is SB3's `MultiInputPolicy` with one change: the Gaussian mean of
candidate i IS the extractor's score of candidate i, where SB3 would put a dense
`Linear(features, N)` on top. The dense head has to learn, from rewards alone, an N x N map
close to the identity before a better candidate gets a higher score. On a world of 1,000
items with N = 20 and S = 5, after 16,384 requests, the dense head reached 10.6 true
engagement per session, random choice among the candidates 9.3, this head 13.5. `train_ppo` runs SB3's `PPO` with it on a `DummyVecEnv`, and
`PPOSlateRecommender` serves the trained policy through the lab's `Recommender` protocol.

Letters used in shape comments: B batch (users), N candidates, S slate size, K top-k length,
H pathway length, F feedback fields, C item features, D width.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from envs.candidate_wrapper import (
    CandidateConfig,
    CandidateSlateEnv,
    CandidateSource,
    PopularRecentCandidates,
    candidate_features,
    item_feature_table,
    rank_candidates,
    validate_candidates,
)
from envs.catalog import Catalog
from envs.files import atomic_write
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig, SlateRewardFn
from envs.spec import BLANK, FEEDBACK_FIELDS, STATIC_CARDINALITIES
from policies.cascade import engagement, mlp, normalise_feedback, pool
from policies.interface import batch_size_of, check_slate_size


@dataclass(frozen=True)
class PPOAgentConfig:
    """Budget and hyper-parameters of `train_ppo`; defaults train in a few minutes on a CPU."""

    total_timesteps: int = 20_000  # requests answered in training: ~1,000 sessions
    n_steps: int = 64  # requests per env per rollout: 8 envs x 64 = 512, ~20 sessions
    batch_size: int = 128  # minibatch of PPO's update; divides n_steps * num_envs
    n_epochs: int = 10  # SB3's default passes over each rollout
    learning_rate: float = 1e-3  # Adam; 3e-4 learnt less in the same budget, 3e-3 overshot
    gamma: float = 0.9  # a session lasts ~10 requests; a shorter horizon has less variance
    gae_lambda: float = 0.9  # below SB3's 0.95: the value head explains little of a session
    clip_range: float = 0.2  # PPO's epsilon (Schulman et al. 2017, eq. 7)
    target_kl: float | None = 0.03  # stop an update's epochs past this KL: the ratio is over
    # N scores, so without it one update moved the policy by a KL of 0.1-0.6
    ent_coef: float = 0.0  # the Gaussian's own std explores; no bonus needed
    log_std_init: float = -1.0  # std 0.37 on scores in [-1, 1]: few clipped, ties rare
    width: int = 32  # D of the extractor, as the cascade's towers
    num_envs: int = 8  # sessions side by side: one batched policy call for 8 requests
    # (a batch of 1 made the two extractors half the cost of a rollout)
    max_requests: int = 50  # TimeLimit: requests per session at most
    candidates: CandidateConfig = field(default_factory=CandidateConfig)  # the candidate stage
    seed: int = 0  # seeds the envs, the initialisation and PPO's minibatches

    def __post_init__(self) -> None:
        for name in ("total_timesteps", "n_steps", "batch_size", "n_epochs", "width",
                     "num_envs", "max_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOAgentConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_steps * self.num_envs < 2:
            raise ValueError(
                "PPOAgentConfig.n_steps * num_envs must be >= 2 (PPO normalises advantages "
                f"over a rollout), got {self.n_steps * self.num_envs}"
            )
        if self.learning_rate <= 0 or self.clip_range <= 0:
            raise ValueError(
                "PPOAgentConfig.learning_rate and clip_range must be > 0, got "
                f"{self.learning_rate} and {self.clip_range}"
            )
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(
                f"PPOAgentConfig.target_kl must be > 0 or None (no early stop), got {self.target_kl}"
            )
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PPOAgentConfig.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")


class CandidateSlateExtractor(BaseFeaturesExtractor):
    """Features of a candidate-slate observation: [scores (N), user (D), candidates (D)].

    Items of the pathways are encoded from their observable catalog features (`item_features`,
    the table the wrapper draws `candidate_features` from), so the extractor generalises to
    items it never saw. The user vector pools the short-term items weighted by their positive
    behaviours and unweighted, the positive items weighted by 1 + their positive behaviours,
    the lifelong entries by cluster size, the short-term feedback, and the static features.
    A candidate's encoding adds a learned embedding of its position in the source's list (a
    retriever's ranking is information). Each candidate gets a score from a shared MLP over
    [user, candidate, user * candidate];
    candidates are also mean-pooled (BLANK ones left out) for the value head.
    """

    def __init__(
        self, observation_space: spaces.Dict, item_features: np.ndarray, width: int = 32
    ) -> None:
        num_candidates = observation_space["candidate_items"].shape[0]
        super().__init__(observation_space, features_dim=num_candidates + 2 * width)
        table = torch.as_tensor(np.asarray(item_features, dtype=np.float32))  # (I, C)
        self.register_buffer("item_features", table, persistent=False)
        self.item = nn.Linear(table.shape[1], width)
        self.static = nn.ModuleList(nn.Embedding(size, width) for size in STATIC_CARDINALITIES)
        self.feedback = nn.Linear(len(FEEDBACK_FIELDS), width)
        self.user_mlp = mlp(6 * width, 2 * width, width)
        self.position = nn.Embedding(num_candidates, width)  # the source's rank of a candidate
        self.candidate_mlp = mlp(3 * width, 2 * width, width)
        self.score = nn.Linear(width, 1)

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids (B, H), float or int, -> (B, H, D); BLANK -> 0."""
        items = items.long()
        encoded = self.item(self.item_features[items.clamp(min=0)])
        return encoded * (items >= 0)[..., None]

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        static = observations["static"].long()  # (B, 5)
        static_embedding = sum(table(static[:, i]) for i, table in enumerate(self.static))
        short_items = observations["short_term_items"]
        short_feedback = observations["short_term_feedback"]  # (B, H, F)
        positive_items = observations["positive_items"]
        lifelong_items = observations["lifelong_items"]
        cluster_size = observations["lifelong_features"][..., -1]  # (B, K)
        shown = (short_items >= 0).float()  # (B, H)
        short_embedding = self.encode_items(short_items)  # (B, H, D)
        pooled = [
            pool(short_embedding, shown * engagement(short_feedback)),
            pool(short_embedding, shown),
            pool(self.encode_items(positive_items),
                 (positive_items >= 0).float() * (1.0 + engagement(observations["positive_feedback"]))),
            pool(self.encode_items(lifelong_items), (lifelong_items >= 0).float() * cluster_size),
        ]
        summary = self.feedback(pool(normalise_feedback(short_feedback), shown))  # (B, D)
        user = self.user_mlp(torch.cat([static_embedding, *pooled, summary], dim=1))  # (B, D)

        real = (observations["candidate_items"] >= 0).float()  # (B, N)
        candidate = (self.item(observations["candidate_features"])
                     + self.position.weight) * real[..., None]  # (B, N, D)
        paired = user[:, None, :].expand_as(candidate)
        hidden = self.candidate_mlp(torch.cat([paired, candidate, paired * candidate], dim=2))
        scores = self.score(hidden).squeeze(2)  # (B, N)
        return torch.cat([scores, user, pool(hidden, real)], dim=1)  # (B, N + 2D)


class CandidateScores(nn.Module):
    """The first N features (B, N + ...) -> (B, N): each candidate's mean is its own score."""

    def __init__(self, num_candidates: int) -> None:
        super().__init__()
        self.num_candidates = num_candidates

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return latent[:, :self.num_candidates]  # (B, N)


class CandidateScoringPolicy(MultiInputActorCriticPolicy):
    """SB3's `MultiInputPolicy` whose Gaussian mean over the N candidate scores is the
    extractor's per-candidate score (a `CandidateSlateExtractor`), not a dense layer.

    Needs `net_arch` with `pi=[]` so the policy latent is the extractor's output, and
    `share_features_extractor=False`: a value head reading the scores pulled them towards
    the size of session returns (~80 in the default world), past the action bounds, where
    clipping erased the ranking. The score layer starts at zero, so the first policy ranks
    candidates by its exploration noise alone: uniformly random among the candidates, the
    baseline it must beat.
    """

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        extractor = self.pi_features_extractor
        if not isinstance(extractor, CandidateSlateExtractor):
            raise ValueError(
                "CandidateScoringPolicy needs features_extractor_class=CandidateSlateExtractor, "
                f"got {type(extractor).__name__}"
            )
        if self.share_features_extractor:
            raise ValueError(
                "CandidateScoringPolicy needs share_features_extractor=False, or the value "
                "loss drives the candidate scores"
            )
        if self.mlp_extractor.latent_dim_pi != extractor.features_dim:
            raise ValueError(
                "CandidateScoringPolicy needs net_arch={'pi': [], 'vf': [...]} so that the "
                f"policy reads the candidate scores directly, got net_arch={self.net_arch}"
            )
        self.action_net = CandidateScores(self.action_space.shape[0])
        nn.init.zeros_(extractor.score.weight)
        nn.init.zeros_(extractor.score.bias)
        self.optimizer = self.optimizer_class(  # the dense head's parameters are gone
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )


def make_candidate_env(
    catalog: Catalog,
    config: PPOAgentConfig,
    session_config: SessionConfig | None = None,
    source: CandidateSource | None = None,
    reward_fn: SlateRewardFn | None = None,
) -> TimeLimit:
    """One session in the candidate wrapper, cut at `config.max_requests` requests."""
    session = OneRecSession(catalog=catalog, config=session_config, reward_fn=reward_fn)
    return TimeLimit(CandidateSlateEnv(session, config.candidates, source), config.max_requests)


def train_ppo(
    catalog: Catalog,
    config: PPOAgentConfig,
    session_config: SessionConfig | None = None,
    source: CandidateSource | None = None,
    reward_fn: SlateRewardFn | None = None,
) -> PPO:
    """PPO with a `CandidateScoringPolicy`, trained for `config.total_timesteps` requests
    on `config.num_envs` candidate-slate sessions (`make_candidate_env`) in a DummyVecEnv.

    SB3 seeds Python's, numpy's and torch's global generators and samples minibatches from
    numpy's; those states are restored afterwards, so training is reproducible from
    `config.seed` and leaves the caller's random state as it was.
    """
    def make_env() -> Monitor:
        return Monitor(make_candidate_env(catalog, config, session_config, source, reward_fn))

    with _isolated_global_random_state():
        env = DummyVecEnv([make_env] * config.num_envs)
        model = PPO(
            CandidateScoringPolicy, env, learning_rate=config.learning_rate,
            n_steps=config.n_steps, batch_size=config.batch_size, n_epochs=config.n_epochs,
            gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
            ent_coef=config.ent_coef, target_kl=config.target_kl, seed=config.seed,
            device="cpu",
            policy_kwargs={
                "features_extractor_class": CandidateSlateExtractor,
                "features_extractor_kwargs": {"item_features": item_feature_table(catalog),
                                              "width": config.width},
                "net_arch": {"pi": [], "vf": [2 * config.width]},
                "share_features_extractor": False,
                "log_std_init": config.log_std_init,
            },
        )
        model.learn(total_timesteps=config.total_timesteps)
    return model


@contextmanager
def _isolated_global_random_state() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global generators on exit (SB3 seeds and draws
    from the legacy global numpy generator, hence the legacy calls)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002


def save_ppo(model: PPO, path: str | Path) -> None:
    """`model.save` to a temporary file, then renamed: a crash never leaves half a file.
    Read it back with `PPO.load(path)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, model.save)  # SB3 takes a binary file object


class PPOSlateRecommender:
    """A trained candidate-slate PPO policy as a `policies.interface.Recommender`.

    For a batch of observations it retrieves candidates with `source` (default: the
    untrained `PopularRecentCandidates` with the policy's N), scores them with the policy's
    Gaussian mean (deterministic; unclipped, so scores beyond the action bounds still
    order) and returns the k best real candidates, BLANK past the last. `rng` only feeds the
    candidate source.
    """

    def __init__(
        self,
        model: PPO,
        catalog: Catalog,
        slate_size: int,
        source: CandidateSource | None = None,
    ) -> None:
        space = model.observation_space
        if not isinstance(space, spaces.Dict) or "candidate_items" not in space.spaces:
            raise ValueError(
                "model was not trained on a CandidateSlateEnv (its observation space has no "
                "'candidate_items'); train it with policies.sb3_agent.train_ppo"
            )
        self.num_candidates = space["candidate_items"].shape[0]
        if int(space["candidate_items"].high.max()) != catalog.num_items - 1:
            raise ValueError(
                f"model was trained on a catalog of {int(space['candidate_items'].high.max()) + 1} "
                f"items, got one of {catalog.num_items}: pass the catalog it was trained on"
            )
        self.model = model
        self.slate_size = check_slate_size(slate_size)
        self.item_features = item_feature_table(catalog)  # (I, C)
        self.source = PopularRecentCandidates(
            catalog, CandidateConfig(num_candidates=self.num_candidates)
        ) if source is None else source

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        if k < 1:
            raise ValueError(f"k must be >= 1 (items to return per user), got {k}")
        users = batch_size_of(observation)
        candidates = validate_candidates(self.source(observation, rng), users,
                                         self.num_candidates, len(self.item_features))
        scores = self.scores(observation, candidates)  # (B, N)
        positions = rank_candidates(scores, candidates, min(k, self.num_candidates))
        items = np.take_along_axis(candidates, positions, axis=1)  # (B, min(k, N))
        padding = np.full((users, k - items.shape[1]), BLANK, dtype=np.int64)
        return np.concatenate([items, padding], axis=1)  # (B, K)

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return self.recommend(observation, self.slate_size, rng)  # (B, S)

    def scores(self, observation: dict[str, np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """The policy's mean score of each candidate (B, N) for a batched observation."""
        policy = self.model.policy
        pathways = [key for key in policy.observation_space.spaces if not key.startswith("candidate_")]
        missing = [key for key in pathways if key not in observation]
        if missing:
            raise ValueError(f"observation lacks {missing}: pass the simulator's observation")
        inputs = {key: np.asarray(observation[key]) for key in pathways}
        inputs["candidate_items"] = candidates
        inputs["candidate_features"] = candidate_features(self.item_features, candidates)
        tensors, _ = policy.obs_to_tensor(inputs)
        with torch.no_grad():
            mean = policy.get_distribution(tensors).distribution.mean  # (B, N)
        return mean.numpy()
