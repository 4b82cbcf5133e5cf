"""Plugins: rewards and methods registered from outside the package, and their errors."""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from onerec_lab.experiment import METHODS, method, register_method
from onerec_lab.experiment import plugins as plugin_module
from onerec_lab.experiment.plugins import PluginError, load_plugins, plugins_named
from rewards.registry import REGISTRY
from trainers.grpo import GRPOConfig, GRPOTrainer

REWARD_PLUGIN = '''
from rewards import register


@register("{name}")
def reward(catalog):
    return lambda batch: (batch.items >= 0).float().mean(1)
'''

METHOD_PLUGIN = '''
from onerec_lab.experiment import register_method
from trainers.grpo import GRPOConfig, GRPOTrainer


@register_method("{name}", config=GRPOConfig, fixed={{"loss_type": "grpo"}})
class Variant(GRPOTrainer):
    """A GRPO variant."""
'''


@pytest.fixture(autouse=True)
def clean_registries() -> Iterator[None]:
    """Each test registers into fresh copies; the built-ins stay as they were."""
    saved = (dict(REGISTRY), dict(METHODS), dict(plugin_module._LOADED),
             list(plugin_module._REQUESTED))
    yield
    for registry, before in zip((REGISTRY, METHODS, plugin_module._LOADED), saved, strict=False):
        registry.clear()
        registry.update(before)
    plugin_module._REQUESTED[:] = saved[3]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_file_plugin_registers_rewards_and_methods_once(tmp_path: Path) -> None:
    rewards_file = write(tmp_path, "mine.py", REWARD_PLUGIN.format(name="shown_share"))
    methods_file = write(tmp_path, "methods.py", METHOD_PLUGIN.format(name="variant"))
    assert load_plugins([str(rewards_file), str(methods_file)], environment=False,
                        entry_points=False) == [str(rewards_file), str(methods_file)]
    assert "shown_share" in REGISTRY
    entry = method("variant")
    assert entry.config_class is GRPOConfig and entry.fixed == {"loss_type": "grpo"}
    assert entry.origin.startswith(str(methods_file)) and entry.summary == "A GRPO variant."
    assert entry.make_config(learning_rate=0.5).loss_type == "grpo"
    # the same file again (another --plugin, the environment): imported once
    assert load_plugins([str(rewards_file)], environment=False, entry_points=False) == []
    assert plugin_module.loaded_plugins() == (str(rewards_file), str(methods_file))


def test_a_plugin_that_fails_names_its_file_and_line(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.py", "import math\n\nvalue = math.sqrt(-1)\n")
    with pytest.raises(PluginError, match=rf"{broken}, line 3: ValueError: math domain error"):
        load_plugins([str(broken)], environment=False, entry_points=False)
    syntax = write(tmp_path, "syntax.py", "def f(:\n")
    with pytest.raises(PluginError, match=rf"{syntax}, line 1: SyntaxError"):
        load_plugins([str(syntax)], environment=False, entry_points=False)
    with pytest.raises(PluginError, match="does not exist"):
        load_plugins([str(tmp_path / "missing.py")], environment=False, entry_points=False)
    with pytest.raises(PluginError, match="ModuleNotFoundError"):
        load_plugins(["no_such_plugin_module"], environment=False, entry_points=False)


def test_a_name_registered_twice_names_both_places(tmp_path: Path) -> None:
    first = write(tmp_path, "first.py", REWARD_PLUGIN.format(name="twice"))
    second = write(tmp_path, "second.py", "\n\n" + REWARD_PLUGIN.format(name="twice"))
    load_plugins([str(first)], environment=False, entry_points=False)
    with pytest.raises(PluginError, match=rf"registered twice: {first}:\d+ and {second}:\d+"):
        load_plugins([str(second)], environment=False, entry_points=False)
    builtin = write(tmp_path, "ecpo_again.py", METHOD_PLUGIN.format(name="ecpo"))
    with pytest.raises(PluginError, match=r"method 'ecpo' is registered twice: .*grpo\.py:\d+ "
                                          rf"and {builtin}:\d+"):
        load_plugins([str(builtin)], environment=False, entry_points=False)


def test_the_environment_and_entry_points_load_plugins(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from_environment = write(tmp_path, "env_plugin.py", REWARD_PLUGIN.format(name="from_env"))
    write(tmp_path, "installed_rewards.py", REWARD_PLUGIN.format(name="from_entry_point"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugin_module.ENVIRONMENT_VARIABLE, str(from_environment))
    entry = importlib.metadata.EntryPoint("mine", "installed_rewards", "onerec_lab.rewards")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry] if
                        group == "onerec_lab.rewards" else [])
    monkeypatch.setattr(plugin_module, "_ENTRY_POINTS_LOADED", False)
    load_plugins()
    assert {"from_env", "from_entry_point"} <= set(REGISTRY)
    sys.modules.pop("installed_rewards", None)


def test_plugins_named_on_a_command_line() -> None:
    assert plugins_named(["--plugin", "a.py", "--method", "x", "--plugin", "b", "c"]) == [
        "a.py", "b", "c"]


def _registered_in_worker(plugins: tuple[str, ...]) -> bool:
    load_plugins(plugins, environment=False, entry_points=False)
    return "worker_reward" in REGISTRY


def test_a_worker_process_loads_the_same_plugins(tmp_path: Path) -> None:
    plugin = write(tmp_path, "worker_plugin.py", REWARD_PLUGIN.format(name="worker_reward"))
    load_plugins([str(plugin)], environment=False, entry_points=False)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(_registered_in_worker, plugin_module.loaded_plugins()).result()


def test_methods_refuse_what_their_name_fixes_and_unknown_settings() -> None:
    ecpo = method("ecpo")
    assert ecpo.make_config().loss_type == "ecpo"
    with pytest.raises(ValueError, match="fixes loss_type='ecpo', got 'grpo'"):
        ecpo.make_config(GRPOConfig(loss_type="grpo"))
    with pytest.raises(ValueError, match="no setting 'learning_rat'.*did you mean 'learning_rate'"):
        ecpo.make_config(learning_rat=1.0)
    with pytest.raises(ValueError, match="unknown method 'ecp'; did you mean 'ecpo'"):
        method("ecp")
    with pytest.raises(ValueError, match="fixes \\['loss'\\], which GRPOConfig does not have"):
        register_method("x", GRPOConfig, {"loss": 1})(GRPOTrainer)
