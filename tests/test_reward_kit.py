"""The reward property kit (`rewards.testing`): the built-ins hold the contract, and each
deliberately broken reward is caught by the property it breaks, with a counterexample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.spec import BLANK
from onerec_lab.cli import main
from onerec_lab.experiment import plugins as plugin_module
from rewards import REGISTRY, build, register
from rewards.protocol import shown_slots
from rewards.testing import KitWorld, check_reward, reward_inputs, reward_properties
from tests.conftest import REPO_ROOT

EXAMPLES = 20  # per property: the built-ins take about a second each on one core

PLUGIN = '''
from rewards import register


@register("kit_shown_share")
def shown_share():
    return lambda batch: batch.shown.float().mean(1)
'''


@pytest.fixture(scope="module")
def world() -> KitWorld:
    return KitWorld.small(seed=0)


@pytest.fixture(autouse=True)
def clean_registries() -> Iterator[None]:
    """Rewards registered here (directly or by a plugin) are gone after each test."""
    saved = dict(REGISTRY), dict(plugin_module._LOADED), list(plugin_module._REQUESTED)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved[0])
    plugin_module._LOADED.clear()
    plugin_module._LOADED.update(saved[1])
    plugin_module._REQUESTED[:] = saved[2]


def failed(results: list) -> dict[str, str]:
    return {result.name: result.counterexample for result in results if not result.held}


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_drawn_inputs_are_valid_batches_of_the_world(data: st.DataObject) -> None:
    """Codes decode to the items (illegal ones to blanks) and the truth is zero wherever the
    simulator shows nothing: at blanks and at repeats of an earlier item."""
    world = KitWorld.small(seed=0)
    batch = data.draw(reward_inputs(world, max_batch=5))
    assert 1 <= batch.batch_size <= 5
    torch.testing.assert_close(world.codec.decode(batch.codes), batch.items)
    hidden = ~shown_slots(batch.items)
    assert (batch.feedback[hidden] == 0).all()
    assert all(value.shape[0] == batch.batch_size for value in batch.context.values())


@pytest.mark.parametrize(("spec", "declared"), [
    ("format", {"slot_order_invariant": True, "bounds": (0.0, 1.0)}),
    ("oracle", {"slot_order_invariant": True, "monotone_in": ("click", "watch_time")}),
    ("pscore", {"slot_order_invariant": True, "bounds": (0.0, 1.0)}),
    ("business(pscore + 0.5*format, alpha=0.5, f=0.3)",
     {"slot_order_invariant": True, "bounds": (0.0, 1.5)}),
])
def test_the_built_in_rewards_hold_the_contract(world: KitWorld, spec: str, declared: dict
                                                ) -> None:
    results = check_reward(build(spec, **world.resources()), world, max_examples=EXAMPLES,
                           **declared)
    assert len(results) == 8 + len(declared) and failed(results) == {}


def repeats_pay(catalog):
    """Broken: a repeated item earns as much as a new one, and once more on top."""
    return lambda batch: ((batch.items != BLANK).float() + (~batch.shown & (batch.items != BLANK))
                          .float()).mean(1)


def mean_over_shown(catalog):
    """Broken: the mean over shown slots, 0 / 0 = NaN for a slate of blanks."""
    return lambda batch: batch.shown.float().sum(1) / batch.shown.sum(1)


def centred_on_the_batch(catalog):
    """Broken: the shown share minus its batch mean, so a slate's reward depends on the
    other slates of the batch."""
    def reward(batch):
        share = batch.shown.float().mean(1)
        return share - share.mean()
    return reward


@pytest.mark.parametrize(("factory", "broken"), [
    (repeats_pay, "repeat_never_raises"),
    (mean_over_shown, "finite"),
    (centred_on_the_batch, "row_alone_equals_row_in_batch"),
])
def test_a_broken_reward_fails_the_property_it_breaks(world: KitWorld, factory, broken: str
                                                      ) -> None:
    name = f"kit_{factory.__name__}"
    register(name)(factory)
    results = check_reward(build(name, **world.resources()), world, max_examples=EXAMPLES)
    failures = failed(results)
    assert list(failures) == [broken]
    assert "items=[[" in failures[broken]  # the shrunk batch, described


def test_the_counterexample_is_the_shrunk_one_and_reproducible(world: KitWorld) -> None:
    """The NaN of an empty slate shrinks to one slate of one blank, the same on each run."""
    register("kit_mean_over_shown")(mean_over_shown)
    reward = build("kit_mean_over_shown", **world.resources())
    first = failed(check_reward(reward, world, max_examples=EXAMPLES))["finite"]
    assert first.startswith("total=[nan]\nitems=[[-1]]")
    assert failed(check_reward(reward, world, max_examples=EXAMPLES))["finite"] == first


def test_monotone_in_is_refused_for_a_reward_that_cannot_see_the_truth(world: KitWorld) -> None:
    with pytest.raises(ValueError, match="requires=\\('feedback',\\)"):
        check_reward(build("format", **world.resources()), world, monotone_in=("click",))


def test_a_plugin_reward_passes_as_a_one_line_test(tmp_path: Path) -> None:
    (tmp_path / "kit_plugin.py").write_text(PLUGIN)
    test_shown_share = reward_properties("kit_shown_share", plugin=str(tmp_path / "kit_plugin.py"),
                                         max_examples=EXAMPLES, bounds=(0.0, 1.0))
    test_shown_share()


def test_a_failing_reward_properties_test_lists_the_broken_properties() -> None:
    register("kit_repeats_pay")(repeats_pay)
    test_repeats = reward_properties("kit_repeats_pay", max_examples=EXAMPLES, bounds=(0.0, 1.0))
    with pytest.raises(AssertionError) as failure:
        test_repeats()
    message = str(failure.value)
    assert "broke 2 properties" in message
    assert "repeat_never_raises failed:\na copy of item" in message
    assert "bounds_0_1 failed:\ntotal=" in message


def test_the_command_fails_with_exit_1_and_the_counterexample(
        world: KitWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`reward check --properties` on a plugin's reward that pays for repeats: the table
    says which property failed, with the shrunk slate, and the command exits 1; a sound
    reward on the same world exits 0."""
    plugin = tmp_path / "broken.py"
    plugin.write_text(
        "import torch\nfrom rewards import register\n\n"
        "@register('kit_cli_repeats_pay')\ndef repeats_pay():\n"
        "    return lambda batch: ((batch.items >= 0) & ~batch.shown).float().mean(1)\n")
    world.logs.save(tmp_path / "logs")
    options = ["--logs", str(tmp_path / "logs"), "--examples", "10", "--json"]
    assert main(["reward", "check", "--properties", "--spec", "format", *options]) == 0
    capsys.readouterr()
    assert main(["reward", "check", "--properties", "--plugin", str(plugin),
                 "--spec", "kit_cli_repeats_pay", *options]) == 1
    rows = {row["property"]: row for row in json.loads(capsys.readouterr().out)["properties"]}
    assert not rows["repeat_never_raises"]["held"]
    assert "items=" in rows["repeat_never_raises"]["counterexample"]
    assert rows["blank_never_raises"]["held"] and rows["finite"]["held"]


FIXTURE_TESTS = '''
import torch
from rewards import register


@register("kit_fixture_centred")
def centred():  # depends on the batch: a row alone scores 0, in a batch its deviation
    return lambda batch: (lambda x: x - x.mean())(batch.shown.float().mean(1))


def test_format_holds(reward_check):
    reward_check("format", slot_order_invariant=True, bounds=(0.0, 1.0))


def test_centred_fails(reward_check):
    reward_check("kit_fixture_centred")


def test_the_world(reward_world):
    assert reward_world.catalog.num_items == 200
'''


def test_the_pytest_plugin_gives_a_fixture_and_the_example_count(tmp_path: Path) -> None:
    """The lab's pytest11 plugin: `reward_check` passes a sound reward and fails a batch-
    dependent one with the broken property named; --reward-examples is accepted and a
    count below 1 is a usage error."""
    (tmp_path / "test_fixture_use.py").write_text(FIXTURE_TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
               "test_fixture_use.py", "--reward-examples", "5", "--reward-seed", "0"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    ran = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=False, env=environment)
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "2 passed" in ran.stdout and "1 failed" in ran.stdout, ran.stdout[-3000:]
    assert "row_alone_equals_row_in_batch failed" in ran.stdout
    refused = subprocess.run([*command[:-4], "--reward-examples", "0"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, check=False,
                             env=environment)
    assert refused.returncode == 4 and "--reward-examples must be >= 1" in refused.stderr
