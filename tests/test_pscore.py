"""The P-score: AUC by hand, fusion by hand, watch-time targets by hand, training on a known
world, the Pareto search (MGDA's common ascent direction included), determinism and
checkpoints."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from envs.spec import BEHAVIOURS, BLANK, FEEDBACK_FIELDS, NUM_FEEDBACK
from rewards import (
    ParetoConfig,
    PScoreConfig,
    PScoreModel,
    PScoreTrainConfig,
    RewardInput,
    auc,
    build,
    fit_pscore,
    fuse_logits,
    fused_auc,
    load_pscore,
    pareto_search,
    save_pscore,
)
from rewards.pareto import _common_ascent, as_dict, average_ranks, min_norm_point, spearman
from rewards.pscore_train import (
    fit_watch_time_scale,
    objective_labels,
    objective_targets,
    split_requests,
)
from tests.test_reward_doubles import FakeLogs, single_threaded_torch  # noqa: F401

OBJECTIVES = PScoreConfig(num_items=1, num_categories=1, num_creators=1).objectives
SIGNS = PScoreConfig(num_items=1, num_categories=1, num_creators=1).signs
FAST = PScoreTrainConfig(epochs=5, batch_size=64, learning_rate=1e-2, pareto=ParetoConfig(steps=30))


@pytest.fixture(scope="module")
def known_world() -> FakeLogs:
    return FakeLogs(num_requests=1500, seed=0)


@pytest.fixture(scope="module")
def fitted(known_world: FakeLogs):
    return fit_pscore(known_world, known_world.catalog, FAST)


def test_auc_by_hand_with_ties() -> None:
    # positives score 0.4 and 0.8, negatives 0.1 and 0.4: pairs (0.4, 0.1) = 1, (0.4, 0.4) =
    # 1/2, (0.8, 0.1) = 1, (0.8, 0.4) = 1, so AUC = 3.5 / 4.
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8])
    labels = torch.tensor([False, True, False, True])
    torch.testing.assert_close(
        average_ranks(scores), torch.tensor([1.0, 2.5, 2.5, 4.0], dtype=torch.float64)
    )
    assert float(auc(scores, labels)) == pytest.approx(0.875)
    two_columns = torch.stack([labels, ~labels], 1)
    torch.testing.assert_close(
        auc(scores, two_columns), torch.tensor([0.875, 0.125], dtype=torch.float64)
    )


def test_auc_without_both_classes_is_undefined_and_reported_as_none() -> None:
    result = auc(torch.tensor([0.2, 0.3]), torch.tensor([[True, False], [True, True]]))
    assert math.isnan(float(result[0])) and float(result[1]) == pytest.approx(1.0)
    assert as_dict(("a", "b"), result) == {"a": None, "b": 1.0}


def test_fused_auc_ranks_hated_items_low() -> None:
    # One objective each way: a score that ranks the liked item first and the hated item last
    # is perfect on both.
    logits = torch.tensor([[2.0, -2.0], [-2.0, 2.0]])  # tower 0 positive, tower 1 "hate"
    labels = torch.tensor([[True, False], [False, True]])
    result = fused_auc(logits, labels, torch.tensor([0.5, 0.5]), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(result, torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_pscore_of_dominated_pairs_by_hand() -> None:
    # Objectives (watch_time, click, ..., hate), equal weights 1/8; item a beats b on click
    # (2 vs 1) and on hate (-1 vs 0), ties elsewhere: fused a = (2 + 1) / 8, fused b = 1 / 8.
    assert OBJECTIVES[0] == "watch_time" and OBJECTIVES[1] == "click" and OBJECTIVES[-1] == "hate"
    weights = torch.full((8,), 1 / 8)
    a = torch.tensor([0.0, 2.0, 0, 0, 0, 0, 0, -1.0])
    b = torch.tensor([0.0, 1.0, 0, 0, 0, 0, 0, 0.0])
    fused = torch.sigmoid(fuse_logits(torch.stack([a, b]), weights, SIGNS))
    torch.testing.assert_close(fused, torch.sigmoid(torch.tensor([3 / 8, 1 / 8])))
    assert fused[0] > fused[1]


def test_watch_time_targets_and_labels_by_hand() -> None:
    # tau = 10 s: watch seconds 0, 5, 10, 30 give soft targets 0, 1/3, 1/2, 3/4 and AUC labels
    # "w >= tau" False, False, True, True; a behaviour keeps its flag.
    feedback = np.zeros((4, NUM_FEEDBACK), dtype=np.float32)
    feedback[:, FEEDBACK_FIELDS.index("watch_time")] = [0.0, 5.0, 10.0, 30.0]
    feedback[:, FEEDBACK_FIELDS.index("like")] = [1.0, 0.0, 1.0, 0.0]
    targets = objective_targets(feedback, ("watch_time", "like"), 10.0)
    torch.testing.assert_close(
        targets, torch.tensor([[0.0, 1.0], [1 / 3, 0.0], [0.5, 1.0], [0.75, 0.0]])
    )
    labels = objective_labels(feedback, ("watch_time", "like"), 10.0)
    assert labels.tolist() == [[False, True], [False, False], [True, True], [True, False]]
    with pytest.raises(ValueError, match="watch_time_scale"):
        objective_targets(feedback, ("watch_time",), None)
    with pytest.raises(ValueError, match="watch_time_scale must be a positive"):
        PScoreConfig(num_items=1, num_categories=1, num_creators=1, watch_time_scale=0.0)


def test_watch_time_scale_is_the_mean_watch_time_of_shown_items_by_hand() -> None:
    # Shown items watched 0, 4, 8, 20, 0 s and one blank slot (99 s, never counted):
    # tau = 32 / 5 = 6.4 s.
    logs = FakeLogs(num_requests=2, slate_size=3, seed=0)
    logs.slates = np.array([[1, 2, 3], [4, 5, BLANK]])
    logs.feedback = np.zeros((2, 3, NUM_FEEDBACK), dtype=np.float32)
    logs.feedback[..., FEEDBACK_FIELDS.index("watch_time")] = [[0.0, 4.0, 8.0], [20.0, 0.0, 99.0]]
    assert fit_watch_time_scale(logs, np.arange(2)) == pytest.approx(6.4)
    logs.feedback[...] = 0.0
    with pytest.raises(ValueError, match="watched at all"):
        fit_watch_time_scale(logs, np.arange(2))


def test_spearman_by_hand() -> None:
    # Ranks (1, 2, 3) against (1, 3, 2): 1 - 6 * (0 + 1 + 1) / (3 * (9 - 1)) = 0.5.
    first, second = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([1.0, 3.0, 2.0])
    assert spearman(first, second) == pytest.approx(0.5)
    assert spearman(first, -first) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        spearman(first, torch.ones(3))


def test_min_norm_point_by_hand() -> None:
    # Hull of (1, 0) and (0, 1): the segment's midpoint (1/2, 1/2). Of (2, 0) and (1, 1): (1, 1).
    # Of (1, 0) and (-1, 0): the origin (no common ascent direction).
    torch.testing.assert_close(
        min_norm_point(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    torch.testing.assert_close(
        min_norm_point(torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)),
        torch.tensor([1.0, 1.0], dtype=torch.float64),
    )
    assert float(
        min_norm_point(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)).norm()
    ) == pytest.approx(0.0, abs=1e-9)


def test_towers_learn_the_known_world(fitted) -> None:
    report = fitted.report
    assert set(report["auc"]) == set(OBJECTIVES)
    for name in ("watch_time", "click", "long_view", "like", "hate"):
        assert report["auc"][name] > 0.6, (name, report["auc"])
    assert report["train_loss"][-1] < report["train_loss"][0]


def test_fit_sets_the_watch_time_scale_and_reports_watch_time_tracking(
    fitted, known_world: FakeLogs
) -> None:
    """tau is the train split's mean watch time per shown item; the fused P-score orders
    the known world's items by watch seconds better than chance (the world's watch time
    follows affinity and quality, which the towers learn)."""
    train_rows = split_requests(known_world.num_requests, 0.2, 0.2, FAST.seed)[0]
    expected = fit_watch_time_scale(known_world, train_rows)
    assert fitted.model.config.watch_time_scale == pytest.approx(expected)
    assert fitted.report["watch_time_scale"] == pytest.approx(expected)
    tracking = fitted.report["watch_time_tracking"]
    assert set(tracking) == {"pscore", "equal_weight"}
    assert tracking["pscore"]["spearman"] > 0.2 and tracking["pscore"]["auc_vs_median"] > 0.6


def test_fit_report_keeps_the_search_promise(fitted) -> None:
    search = fitted.report["search"]
    for name in OBJECTIVES:
        start, final = search["equal_weight_auc"][name], search["pscore_auc"][name]
        if start is not None:
            assert final >= start, name
    weights = torch.tensor(list(fitted.report["fusion_weights"].values()))
    torch.testing.assert_close(fitted.model.fusion_weights, weights.float(), atol=1e-6, rtol=0)


def test_pareto_search_removes_a_noise_tower() -> None:
    """Known answer: every label follows a latent quality q; towers 1..6 see q, tower 0 sees
    only noise. Equal weights give the noise tower 1/7 of the score; lowering it helps every
    objective, so the search must do that and never lower any AUC on its data."""
    rng = np.random.default_rng(0)
    quality = rng.normal(size=4000)
    signs = SIGNS.double()
    size = (4000, len(signs))
    labels = torch.as_tensor(
        rng.random(size) < 1 / (1 + np.exp(-2 * signs.numpy() * quality[:, None]))
    )
    logits = torch.as_tensor(signs.numpy() * quality[:, None] + 0.5 * rng.normal(size=size))
    logits[:, 0] = torch.as_tensor(4.0 * rng.normal(size=4000))
    result = pareto_search(logits, labels, signs, ParetoConfig(steps=60))
    assert result.accepted > 0
    assert (result.final_auc >= result.start_auc).all()
    assert (result.final_auc > result.start_auc).sum() >= len(signs) - 2
    assert result.weights[0] < 1 / len(signs) / 2


def test_common_ascent_direction_where_no_coordinate_move_helps_both_by_hand() -> None:
    """Two objectives whose AUC moves linearly with three log-weights, gradients
    g_A = (1, -0.3, -0.7) and g_B = (-1, 0.7, 0.3): every coordinate move, up or down, lowers
    one of them, yet g_A + g_B = (0, 0.4, -0.4) raises both (0.16 each). The MGDA direction
    from the coordinate probes must raise both; with g_B = -g_A there is none."""
    step, base = 0.1, torch.tensor([0.7, 0.6], dtype=torch.float64)
    precision = torch.ones(1, 2, dtype=torch.float64)  # one part, equal standard errors

    def direction_from_probes(jacobian: torch.Tensor) -> torch.Tensor | None:
        plus = (base + step * jacobian.T)[:, None, :]  # (K, P=1, K') AUC after w_j up
        minus = (base - step * jacobian.T)[:, None, :]  # (K, P=1, K') AUC after w_j down
        return _common_ascent(plus, minus, step, precision)

    jacobian = torch.tensor([[1.0, -0.3, -0.7], [-1.0, 0.7, 0.3]], dtype=torch.float64)  # (K', K)
    coordinates = torch.cat([torch.eye(3), -torch.eye(3)]).double()  # (2K, K)
    assert not ((coordinates @ jacobian.T) > 0).all(1).any()
    direction = direction_from_probes(jacobian)
    assert direction is not None and float(direction.norm()) == pytest.approx(1.0)
    assert (jacobian @ direction > 0).all()
    assert direction_from_probes(torch.stack([jacobian[0], -jacobian[0]])) is None


def test_same_seed_same_fit(known_world: FakeLogs) -> None:
    config = PScoreTrainConfig(epochs=1, batch_size=128, pareto=ParetoConfig(steps=6), seed=3)
    first = fit_pscore(known_world, known_world.catalog, config)
    second = fit_pscore(known_world, known_world.catalog, config)
    assert first.report == second.report
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(value, second.model.state_dict()[name], rtol=0, atol=0)


def test_checkpoint_round_trip_is_atomic_and_exact(fitted, known_world: FakeLogs, tmp_path) -> None:
    folder = save_pscore(fitted.model, tmp_path / "pscore", fitted.report, catalog_fingerprint="f1")
    assert sorted(path.name for path in folder.iterdir()) == ["pscore.pt"]  # one file: one rename
    loaded = load_pscore(folder)
    assert loaded.catalog_fingerprint == "f1"
    assert loaded.config == fitted.model.config and loaded.config.watch_time_scale is not None
    rows = np.arange(20)
    batch = RewardInput(items=known_world.slates[rows], context=known_world.contexts(rows))
    torch.testing.assert_close(
        build("pscore", pscore_model=loaded)(batch).total,
        build("pscore", pscore_model=fitted.model)(batch).total,
    )


def test_checkpoint_without_watch_time_still_loads(tmp_path) -> None:
    """A P-score saved before the watch-time objective (seven behaviour towers, no
    watch_time_scale in its config; the version-1 pair pscore.json + pscore.pt) loads with its
    own objectives."""
    config = PScoreConfig(
        num_items=5,
        num_categories=2,
        num_creators=2,
        embed_dim=4,
        hidden_dim=8,
        tower_dim=4,
        objectives=BEHAVIOURS,
    )
    model = PScoreModel(config)
    torch.save(model.state_dict(), tmp_path / "pscore.pt")
    old_config = {name: value for name, value in asdict(config).items()
                  if name != "watch_time_scale"}
    (tmp_path / "pscore.json").write_text(json.dumps({
        "kind": "pscore", "config": old_config,
        "fusion_weights": model.fusion_weights.tolist(), "report": {},
    }))
    loaded = load_pscore(tmp_path)
    assert loaded.config.objectives == BEHAVIOURS and loaded.config.watch_time_scale is None


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="reward fit"):
        load_pscore(tmp_path)
    (tmp_path / "pscore.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="pscore.pt is not a readable P-score file"):
        load_pscore(tmp_path)
    config = PScoreConfig(num_items=5, num_categories=2, num_creators=2, embed_dim=4)
    torch.save(PScoreModel(config).state_dict(), tmp_path / "pscore.pt")
    with pytest.raises(ValueError, match="without its pscore.json"):
        load_pscore(tmp_path)
    (tmp_path / "pscore.json").write_text('{"kind": "codec"}')
    with pytest.raises(ValueError, match="pscore.json is not a readable P-score config"):
        load_pscore(tmp_path)


def test_bad_context_and_items_are_named(fitted, known_world: FakeLogs) -> None:
    context = known_world.contexts(np.arange(2))
    reward = build("pscore", pscore_model=fitted.model)
    too_big = np.full((2, 3), known_world.catalog.num_items)
    with pytest.raises(ValueError, match="outside the P-score's catalog"):
        reward(RewardInput(items=too_big, context=context))
    context["static"] = context["static"].copy()
    context["static"][0, 1] = 99
    with pytest.raises(ValueError, match="static feature age_group"):
        reward(RewardInput(items=known_world.slates[:2], context=context))
    with pytest.raises(ValueError, match="needs the user context"):
        reward(RewardInput(items=known_world.slates[:2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pscore_reward_on_cuda_matches_cpu(fitted, known_world: FakeLogs) -> None:
    rows = np.arange(16)
    cpu_batch = RewardInput(items=known_world.slates[rows], context=known_world.contexts(rows))
    cuda_batch = RewardInput(
        items=torch.as_tensor(known_world.slates[rows]).cuda(), context=known_world.contexts(rows)
    )
    spec = "business(pscore, alpha=0.5, f=0.1) + 0.5*format"
    on_cpu = build(spec, pscore_model=fitted.model, catalog=known_world.catalog)(cpu_batch)
    model_on_gpu = PScoreModel(fitted.model.config).cuda()
    model_on_gpu.load_state_dict(fitted.model.state_dict())
    on_gpu = build(spec, pscore_model=model_on_gpu, catalog=known_world.catalog)(cuda_batch)
    assert on_gpu.total.device.type == "cuda"
    torch.testing.assert_close(on_gpu.total.cpu(), on_cpu.total, atol=1e-5, rtol=1e-4)
