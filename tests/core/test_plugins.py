from __future__ import annotations

import attrs
import pytest

from nas_core.errors import PluginError, UnknownNameError
from nas_core.hookspecs import hookimpl
from nas_core.plugins import collect_registries, make_plugin_manager
from nas_core.registry import Registry


class Duplicate:
    @hookimpl
    def nas_register_spaces(self, register):
        register("darts_cnn", object)


class Broken:
    @hookimpl
    def nas_register_datasets(self, register):
        raise RuntimeError("boom")


class Typo:
    @hookimpl
    def nas_register_space(self, register):  # misspelt hook name
        pass


class Extra:
    @hookimpl
    def nas_register_discretizers(self, register):
        @attrs.frozen
        class Opts:
            n: int = 1

        register("extra_disc", lambda options: None, options=Opts, doc="a test discretizer")


def test_builtins_arrive_through_entry_points():
    regs = collect_registries(make_plugin_manager())
    assert regs.spaces.get("darts_cnn").plugin == "darts"
    assert regs.optimizers.names("darts_*") == ["darts_1st", "darts_2nd"]
    assert {"demo", "paper"} <= set(regs.presets)


def test_no_autoload_means_no_builtins():
    regs = collect_registries(make_plugin_manager(autoload=False, extra_plugins=[("extra", Extra())]))
    assert len(regs.spaces) == 0
    assert regs.discretizers.get("extra_disc").plugin == "extra"
    assert regs.discretizers.get("extra_disc").doc == "a test discretizer"


def test_duplicate_name_names_both_plugins():
    pm = make_plugin_manager(extra_plugins=[("dupe", Duplicate())])
    with pytest.raises(PluginError, match="search space 'darts_cnn' is registered twice: by plugin 'darts' and by plugin 'dupe'"):
        collect_registries(pm)


def test_plugin_failure_names_plugin_and_hook():
    pm = make_plugin_manager(autoload=False, extra_plugins=[("broken", Broken())])
    with pytest.raises(PluginError, match="plugin 'broken' .* failed in nas_register_datasets: RuntimeError: boom"):
        collect_registries(pm)


def test_misspelt_hook_is_rejected():
    with pytest.raises(PluginError, match="nas_register_space"):
        make_plugin_manager(autoload=False, extra_plugins=[("typo", Typo())])


def test_blocking_a_plugin(monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "darts")
    regs = collect_registries(make_plugin_manager())
    assert "darts_cnn" not in regs.spaces


def test_unknown_name_lists_valid_names_and_closest():
    reg = Registry("search space")
    for name in ("darts_cnn", "darts_rnn", "nasbench"):
        reg.add(name, object, plugin="p")
    with pytest.raises(UnknownNameError) as e:
        reg.get("darts_cn")
    assert str(e.value) == ("unknown search space 'darts_cn'; did you mean 'darts_cnn'? "
                            "Valid search spaces: darts_cnn, darts_rnn, nasbench")
    assert isinstance(e.value, KeyError)
    assert reg.names("darts_*") == ["darts_cnn", "darts_rnn"]
    with pytest.raises(PluginError, match="must be an attrs class"):
        reg.add("x", object, options=dict, plugin="p")
