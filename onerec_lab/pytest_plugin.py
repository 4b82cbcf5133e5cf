"""The lab's pytest plugin (entry point `pytest11`, installed with the package): options and a
fixture for property tests of rewards written with `rewards.testing`.

    pytest test_my_reward.py --reward-examples 500 --reward-seed 3

- `--reward-examples N`: Hypothesis examples per property in every `reward_properties(...)`
  test, and the default of the `reward_check` fixture (overrides what the test module says;
  a CI job can run many more examples than a developer's quick run).
- `--reward-seed S`: the seed of the drawn batches and of the small world.
- fixture `reward_world`: `rewards.testing.KitWorld.small(seed)`, the world the checks draw for.
- fixture `reward_check`: `reward_check(spec, **declared)` builds the spec on that world, runs
  `check_reward` and fails the test with every broken property's shrunk counterexample.

Kept import-light: the kit (torch, Hypothesis, the simulator) is imported only by a test
that uses it, so installing the lab does not slow other projects' pytest runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

OVERRIDES: dict[str, int] = {}  # "max_examples", "seed": set from the command line


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("onerec-lab", "onerec-lab reward property kit")
    group.addoption("--reward-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per reward property (rewards.testing)")
    group.addoption("--reward-seed", type=int, default=None, metavar="S",
                    help="seed of the reward kit's world and drawn batches")


def pytest_configure(config: pytest.Config) -> None:
    examples = config.getoption("reward_examples", None)
    seed = config.getoption("reward_seed", None)
    if examples is not None and examples < 1:
        raise pytest.UsageError(f"--reward-examples must be >= 1, got {examples}")
    OVERRIDES.clear()
    OVERRIDES.update({name: value for name, value in (("max_examples", examples),
                                                      ("seed", seed)) if value is not None})


def overridden(name: str, default: int) -> int:
    """The command line's value of `name` ("max_examples" or "seed"), else `default`."""
    return OVERRIDES.get(name, default)


@pytest.fixture
def reward_world() -> Any:
    """The kit's small world (`KitWorld.small`) at --reward-seed (default 0)."""
    from rewards.testing import KitWorld

    return KitWorld.small(overridden("seed", 0))


@pytest.fixture
def reward_check(reward_world: Any) -> Callable[..., None]:
    """`reward_check(spec, **declared)`: the contract and the declared properties of the
    reward `spec` on `reward_world`, failing with each broken property's counterexample."""
    from rewards import build
    from rewards.testing import DEFAULT_EXAMPLES, check_reward, failures_report

    def run(spec: str, **declared: Any) -> None:
        reward = build(spec, **reward_world.resources())
        results = check_reward(reward, reward_world, max_examples=overridden("max_examples", DEFAULT_EXAMPLES),
                               seed=overridden("seed", 0), **declared)
        if not all(result.held for result in results):
            pytest.fail(f"reward {spec!r}:\n\n{failures_report(results)}", pytrace=False)

    return run
