from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nas_core.config import Layer, load_yaml_file, parse_set, resolve, to_dict, to_yaml
from nas_core.errors import ConfigError, UnknownNameError


def test_demo_preset_is_the_default_and_paper_preset_has_the_papers_values(registries):
    assert registries.default_preset() == "demo"
    demo = resolve(registries, [], preset="demo")
    assert demo.dataset.name == "digits" and demo.optimizer.name == "darts_2nd" and demo.task.name == "classification"
    paper = resolve(registries, [], preset="paper")
    assert (paper.space.options.cells, paper.space.options.channels) == (8, 16)
    assert (paper.search.batch_size, paper.search.epochs, paper.task.options.search_split) == (64, 50, 0.5)
    # evaluation: the paper trains on all 50k images and reads the test set once
    assert paper.task.options.valid_split == 0.0 and paper.task.options.cutout == 16
    assert (paper.network.cells, paper.network.channels, paper.network.drop_path) == (20, 36, 0.2)
    t = paper.trainer.options
    assert (paper.train.epochs, paper.train.batch_size, t.lr, t.weight_decay, t.grad_clip) == (600, 96, 0.025, 3e-4, 5.0)
    o = paper.optimizer.options
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.xi) == (3e-4, (0.5, 0.999), 1e-3, None)
    assert paper.relaxation.options.init_std == 1e-3
    assert paper.dataset.name == "cifar10"


def test_layers_later_wins_and_set_parses_yaml_scalars(registries, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("search: {epochs: 7}\noptimizer: {w_lr: 3e-2}\n")  # '3e-2' is a string to YAML 1.1
    cfg = resolve(registries, [Layer(load_yaml_file(f), "file"),
                               Layer(parse_set(["search.epochs=3", "optimizer.xi=0", "seed=5"]), "--set")],
                  preset="demo")
    assert cfg.search.epochs == 3 and cfg.seed == 5
    assert cfg.optimizer.options.w_lr == 0.03 and cfg.optimizer.options.xi == 0.0


def test_resolved_config_round_trips_through_yaml(registries):
    cfg = resolve(registries, [Layer(parse_set(["search.epochs=2"]), "--set")], preset="paper")
    again = resolve(registries, [Layer(yaml.safe_load(to_yaml(cfg)), "saved")], preset=None)
    assert again == cfg and to_dict(again) == to_dict(cfg)


def test_unknown_key_names_key_file_and_valid_keys(registries, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("search:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        resolve(registries, [Layer(load_yaml_file(f), f"config file {f}")], preset="demo")
    msg = str(e.value)
    assert f"config file {f}" in msg and "search.epoch" in msg and "did you mean 'epochs'" in msg
    assert "batch_size, epochs, eval_every" in msg
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'.*valid keys: data_root, dataset"):
        resolve(registries, [Layer({"optimiser": {}}, "x")], preset="demo")
    with pytest.raises(ConfigError, match=r"unknown key 'space.width'.*valid keys of search space 'darts_cnn': "
                                          r"auxiliary, cells, channels, channels_last, drop_path, edge, fused_edges, nodes, ops, "
                                          r"recompute_edges"):
        resolve(registries, [Layer({"space": {"width": 3}}, "x")], preset="demo")


def test_wrong_type_names_key_expected_and_given(registries):
    with pytest.raises(ConfigError, match=r"--set: search.epochs must be int, got str 'many'"):
        resolve(registries, [Layer(parse_set(["search.epochs=many"]), "--set")], preset="demo")
    with pytest.raises(ConfigError, match=r"optimizer.arch_betas must have 2 items"):
        resolve(registries, [Layer({"optimizer": {"arch_betas": [0.5]}}, "x")], preset="demo")
    with pytest.raises(ConfigError, match=r"search.epochs must be int, got float 2.5"):
        resolve(registries, [Layer({"search": {"epochs": 2.5}}, "x")], preset="demo")
    with pytest.raises(ConfigError, match=r"invalid space option: 'cells' must be >= 1"):
        resolve(registries, [Layer({"space": {"cells": 0}}, "x")], preset="demo")  # attrs validator
    with pytest.raises(ConfigError, match=r"unknown ops \['conv_9x9'\]"):
        resolve(registries, [Layer({"space": {"ops": ["none", "conv_9x9"]}}, "x")], preset="demo")


def test_unknown_names_list_valid_choices_and_closest_match(registries):
    with pytest.raises(UnknownNameError) as e:
        resolve(registries, [Layer({"optimizer": {"name": "darts_2"}}, "x")], preset="demo")
    assert "did you mean 'darts_2nd'" in str(e.value) and "darts_1st, darts_2nd" in str(e.value)
    with pytest.raises(ConfigError, match="unknown preset 'papr'.*did you mean 'paper'"):
        resolve(registries, [], preset="papr")


def test_preset_options_are_dropped_for_a_component_that_does_not_take_them(registries):
    from nas_core.registry import Registry
    import attrs

    @attrs.frozen
    class Opts:
        width: int = 4

    spaces = Registry("search space")
    for entry in registries.spaces:
        spaces.add(entry.name, entry.factory, options=entry.options, plugin=entry.plugin)
    spaces.add("other", lambda o: None, options=Opts, plugin="test")
    regs = attrs.evolve(registries, spaces=spaces)
    cfg = resolve(regs, [Layer({"space": {"name": "other"}}, "cli")], preset="paper")
    assert cfg.space.options == Opts()
    with pytest.raises(ConfigError, match="space.cells"):  # user layers stay strict
        resolve(regs, [Layer({"space": {"name": "other", "cells": 3}}, "cli")], preset="demo")


def test_bad_yaml_and_bad_set_are_clear(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_file(f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml_file(f)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["search.epochs"])


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_file(f)


def test_no_unsafe_loading_anywhere_in_the_package():
    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("nas_core/**/*.py"), *root.glob("plugins/**/*.py")]
    assert sources
    pattern = re.compile(r"yaml\.load\(|(?<![.\w])eval\(|(?<![.\w])exec\(|weights_only=False|download=True")
    for path in sources:
        assert not pattern.search(path.read_text()), path


def test_preset_options_follow_a_component_with_the_same_options_class(registries):
    demo = resolve(registries, [], preset="demo")
    first = resolve(registries, [Layer({"optimizer": {"name": "darts_1st"}}, "command line")], preset="demo")
    assert first.optimizer.name == "darts_1st"
    assert first.optimizer.options == demo.optimizer.options  # demo's lrs, not the class defaults
    assert first.optimizer.options.w_lr == 0.05


def test_set_chooses_a_component_option_and_its_options_in_either_order():
    expected = {"space": {"edge": {"name": "weighted_sum", "k": 2}}}
    assert parse_set(["space.edge=weighted_sum", "space.edge.k=2"]) == expected
    assert parse_set(["space.edge.k=2", "space.edge=weighted_sum"]) == expected
    with pytest.raises(ConfigError, match="'epochs' is set both as a value and as a section"):
        parse_set(["search.epochs=3", "search.epochs.x=1"])
