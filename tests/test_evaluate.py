"""Evaluation in the simulator: figures by hand on scripted recommenders, OneRec's adapter."""

from __future__ import annotations

import numpy as np
import pytest

from envs.logs import LoggedSessions
from envs.spec import BLANK
from policies.baselines import PopularRecommender
from policies.codec import SemanticIdCodec
from policies.interface import SlateRecommender
from rewards import build
from tests.test_pretrain import SESSIONS, small_policy
from trainers.evaluate import EvaluationConfig, OneRecRecommender, evaluate, evaluation_markdown


class Scripted(SlateRecommender):
    """Always the same slate: items 0..S-1, the last `blanks` slots left empty."""

    def __init__(self, slate_size: int, blanks: int) -> None:
        self.slate_size, self.blanks = slate_size, blanks

    def recommend(self, observation, k, rng):
        slate = np.arange(k, dtype=np.int64)
        slate[k - self.blanks:] = BLANK
        return np.tile(slate, (len(observation["static"]), 1))


CONFIG = EvaluationConfig(users=6, max_requests=3, batch_size=4)


def test_figures_of_a_scripted_slate_by_hand(logs: LoggedSessions) -> None:
    catalog = logs.catalog
    result = evaluate(Scripted(SESSIONS.slate_size, blanks=3), catalog, SESSIONS, CONFIG,
                      build("format"))
    assert result.legality == pytest.approx(0.7)  # 7 of 10 slots hold an item
    assert result.proxy_reward == pytest.approx(0.7)  # format: the share of legal slots
    assert result.coverage == pytest.approx(7 / catalog.num_items)
    assert result.diversity == pytest.approx(len(np.unique(catalog.category[:7, 2])))
    assert 1 <= result.session_length <= 3 and 0 <= result.leave_rate <= 1
    assert result.true_watch_time > 0 and set(result.behaviour_rates) >= {"click", "hate"}


def test_the_same_users_every_time_and_a_readable_table(logs: LoggedSessions) -> None:
    popular = PopularRecommender(np.asarray(logs.catalog.popularity), SESSIONS.slate_size)
    first = evaluate(popular, logs.catalog, SESSIONS, CONFIG)
    second = evaluate(popular, logs.catalog, SESSIONS, CONFIG)
    assert first == second and first.legality == 1.0 and first.proxy_reward is None
    table = evaluation_markdown({"popular": first})
    assert "| popular |" in table and "true watch time" in table


def test_onerec_serves_its_top_beams_with_blanks_for_illegal_codes(
    logs: LoggedSessions, codec: SemanticIdCodec
) -> None:
    policy = small_policy(codec)
    recommender = OneRecRecommender(policy, slate_size=4, candidates=6)
    observation = logs.contexts(np.arange(3))
    slate = recommender.recommend(observation, 4, np.random.default_rng(0))
    assert slate.shape == (3, 4) and slate.dtype == np.int64
    assert ((slate == BLANK) | ((slate >= 0) & (slate < codec.num_items))).all()
    constrained = OneRecRecommender(policy, 4, 6, constrained=True)
    assert (constrained.recommend(observation, 4, np.random.default_rng(0)) >= 0).all()
    # a selector re-ranks the candidates by its item scores: illegal ones last
    selector = build("format")
    picked = OneRecRecommender(policy, 4, 6, selector=selector).recommend(
        observation, 4, np.random.default_rng(0))
    legal = picked != BLANK
    assert not (~legal[:, :-1] & legal[:, 1:]).any()  # no blank before a legal item
    with pytest.raises(ValueError, match="slate_size is 10"):
        evaluate(recommender, logs.catalog, SESSIONS, CONFIG)
    result = evaluate(OneRecRecommender(policy, SESSIONS.slate_size, 10), logs.catalog, SESSIONS,
                      EvaluationConfig(users=2, max_requests=2), build("format", codec=codec))
    assert 0 <= result.legality <= 1


def test_bad_settings_are_clear_errors(codec: SemanticIdCodec) -> None:
    with pytest.raises(ValueError, match="users must be >= 1"):
        EvaluationConfig(users=0)
    with pytest.raises(ValueError, match="candidates must be >= slate_size"):
        OneRecRecommender(small_policy(codec), slate_size=10, candidates=4)
    with pytest.raises(ValueError, match="scores slates, not items"):
        OneRecRecommender(small_policy(codec), 4, 6,
                          selector=type("Slate", (), {"name": "x"})())
