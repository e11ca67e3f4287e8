"""The NAS-Bench-201 space: its networks against the authors' parameter counts, its supernet, the cell
string, argmax derivation, the benchmark-file lookup (and its refusal of code), and a tiny search
and training end to end."""

from __future__ import annotations

import collections

import attrs
import numpy as np
import pytest
import torch

from conftest import TINY, image_task, os_system_payload
from nas_core import (ConfigError, DataInfo, Genotype, GenotypeError, MixingWeights, cli, format_cell_string,
                      load_genotype, parse_cell_string)
from nas_darts.architect import DartsOptions, darts_second_order
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
from nas_nb201.argmax import ArgmaxEdgeDiscretizer
from nas_nb201.options import ArgmaxEdgeOptions, Nb201Options
from nas_nb201.space import Nb201Space

CIFAR = DataInfo((3, 32, 32), 10)
README_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def space(**options) -> Nb201Space:
    return Nb201Space(Nb201Options(**options))


# Parameter counts of the authors' TinyNetwork(C=16, N=5, genotype, 10 classes): AutoDL-Projects at
# f46486e21b71ae6459a700be720d7648b5429569, xautodl/models/cell_infers/tiny_network.py, counted by
# benchmarks/fidelity/nb201.py (which also checks their outputs); ResNet's 0.559 M is the
# benchmark's published figure for it.
@pytest.mark.parametrize("cell, params", [
    (README_CELL, 802426),
    (RESNET_CELL, 559386),
    ("|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|", 372346),
    ("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|", 344346),
])
def test_network_parameters_equal_the_authors_tiny_network(cell, params):
    network = space().build_network(parse_cell_string(cell), CIFAR)
    assert sum(p.numel() for p in network.parameters()) == params


def test_supernet_parameters_equal_the_authors_darts_supernet():
    # TinyNetworkDarts(16, 5, 4, 10, NAS_BENCH_201, affine=False, track_running_stats=True).get_weights()
    supernet = space().build_supernet(CIFAR)
    assert sum(p.numel() for p in supernet.parameters()) == 1692826
    spec = space().arch_spec()
    assert spec.edges["cell"] == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert spec.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert (spec.num_inputs, spec.inputs_per_node, spec.zero_op) == (1, 3, "none")


def test_search_ops_are_affine_free_with_conv_biases_and_discrete_ops_are_affine():
    supernet = space(cells=1, channels=4).build_supernet(CIFAR)
    conv = supernet.cells[0].edges[0].ops[2].op  # nor_conv_3x3 (the zero op has no module)
    assert conv[1].bias is not None and not conv[2].affine and conv[2].track_running_stats
    network = space(cells=1, channels=4).build_network(parse_cell_string(README_CELL), CIFAR)
    conv = network.cells[0].layers[0].op
    assert conv[1].bias is None and conv[2].affine


def test_the_networks_run_on_digits_and_refuse_images_they_would_pool_away():
    digits = DataInfo((1, 8, 8), 10)
    network = space(cells=1, channels=4).build_network(parse_cell_string(README_CELL), digits)
    assert network(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="too small"):
        space(cells=1, channels=4).build_supernet(DataInfo((1, 2, 2), 10))


def test_hard_sampling_computes_only_the_chosen_op_and_matches_the_weighted_sum():
    torch.manual_seed(0)
    built = space(cells=1, channels=4)
    supernet = built.build_supernet(DataInfo((1, 8, 8), 10)).eval()
    chosen = (3, 0, 1, 2, 4, 3)  # a column per edge, the zero op included
    one_hot = torch.nn.functional.one_hot(torch.tensor(chosen), 5).float()
    calls = []
    for cell in supernet.cells:
        for row, edge in enumerate(getattr(cell, "edges", ())):
            for op in edge.ops:
                op.register_forward_hook(lambda m, i, o, row=row: calls.append(row))
    x = torch.randn(2, 1, 8, 8)
    summed = supernet(x, arch_weights=MixingWeights({"cell": one_hot}))
    calls.clear()
    hard = supernet(x, arch_weights=MixingWeights({"cell": one_hot}, {"cell": chosen}))
    assert torch.equal(hard, summed)
    assert len(calls) == 3 * 5  # 3 search cells, one op on each of the 5 edges not on "none"


def test_cell_string_round_trip_and_loading(tmp_path, registries):
    genotype = load_genotype(README_CELL, registries.genotypes)
    assert genotype.cells["cell"].nodes[2] == (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2))
    assert genotype.cells["cell"].concat == (3,)
    assert format_cell_string(genotype) == README_CELL
    (tmp_path / "cell.txt").write_text(README_CELL + "\n")
    assert load_genotype(str(tmp_path / "cell.txt"), {}) == genotype
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert format_cell_string(registries.genotypes["darts_v2"][0]) is None  # two cells: the DARTS text form
    assert format_cell_string(registries.genotypes["nb201_resnet"][0]) == RESNET_CELL


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+", "node 2: expected |op~input|...|, got ''"),
    ("|nor_conv_3x3~0||", "node 1: expected op~input"),
    ("|nor_conv_3x3 0|", "node 1: expected op~input"),
    ("|nor_conv_3x3~-1|", "node 1: expected op~input"),
    ("|nor_conv_3x3~0|+|skip~" + "9" * 5000 + "|", "is not a node index"),
    ("|a~0|" + "+|a~0|" * 100, "has 101 intermediate nodes; a cell may have at most 64"),
    ("|__import__('os').system('x')~0|", "expected op~input"),
])
def test_malformed_cell_strings_are_one_line_errors(text, message):
    with pytest.raises(GenotypeError, match=message.replace("|", r"\|").replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+").replace(".", r"\.")) as e:
        parse_cell_string(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cell, message", [
    ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1: unknown op 'nor_conv_5x5'"),
    ("|nor_conv_3x3~1|", "node 1: input 1 out of range 0..0"),
])
def test_the_space_refuses_cells_that_do_not_fit(cell, message):
    with pytest.raises(GenotypeError, match=message):
        space().validate(parse_cell_string(cell))


def test_the_space_refuses_other_cell_types_and_outputs(registries):
    with pytest.raises(GenotypeError, match=r"this space's cells are \['cell'\]"):
        space().validate(registries.genotypes["darts_v2"][0])
    cell = parse_cell_string(README_CELL).cells["cell"]
    with pytest.raises(GenotypeError, match=r"outputs its last node: \[3\]"):
        space().validate(Genotype({"cell": type(cell)(cell.nodes, (2, 3))}))


def test_argmax_per_edge_may_choose_the_zero_op_as_the_authors_genotype():
    spec = space().arch_spec()
    strengths = torch.tensor([[0.9, 0.1, 0, 0, 0],  # 0->1: none wins
                              [0, 0, 0, 0.6, 0.4],  # 0->2
                              [0, 0.5, 0.5, 0, 0],  # 1->2: a tie, the first op
                              [0, 0, 0, 0, 1.0],  # 0->3
                              [0.3, 0.2, 0.1, 0, 0],  # 1->3: none wins
                              [0, 0, 0.7, 0, 0]])  # 2->3
    derived = ArgmaxEdgeDiscretizer(ArgmaxEdgeOptions()).derive({"cell": strengths}, spec)
    assert format_cell_string(derived) == ("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|none~1|"
                                           "nor_conv_1x1~2|")
    no_zero = ArgmaxEdgeDiscretizer(ArgmaxEdgeOptions(zero=False)).derive({"cell": strengths}, spec)
    assert format_cell_string(no_zero) == ("|skip_connect~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|"
                                           "skip_connect~1|nor_conv_1x1~2|")
    space().validate(derived)


# -- the benchmark file -------------------------------------------------------------------------

DATASETS = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
            "cifar100": ("x-valid", "x-test", "ori-test")}


def trial(dataset: str, epochs: int, accuracy: float) -> dict:
    """A ResultsCount.state_dict() of the authors' API (nas_201_api/api_utils.py), numbers as it holds them."""
    return {"name": dataset, "net_state_dict": None, "train_acc1es": {e: accuracy - 1 for e in range(epochs)},
            "train_acc5es": None, "train_losses": {e: 0.5 for e in range(epochs)},
            "train_times": collections.OrderedDict((e, 1.0) for e in range(epochs)),
            "arch_config": {"channel": 16, "num_cells": 5, "class_num": 10},
            "params": np.float64(0.559386), "flop": np.float64(78.56), "seed": 0, "epochs": epochs, "latency": [0.01],
            "eval_names": list(DATASETS[dataset]),
            "eval_acc1es": {f"{n}@{e}": accuracy + i for i, n in enumerate(DATASETS[dataset]) for e in range(epochs)},
            "eval_times": {}, "eval_losses": {}}


def benchmark(path, zipped: bool = True, payload=None) -> None:
    """A benchmark file in the published layout: 3 cells, 2 with records (trained twice: seeds 777, 888)."""
    archs = [README_CELL, RESNET_CELL, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    infos = {}
    for index, arch in enumerate(archs[:2]):
        infos[index] = {key: {"arch_index": index, "arch_str": arch, "clear_net_done": True,
                              "dataset_seed": {d: ["777", "888"] for d in DATASETS},
                              "all_results": {(d, seed): trial(d, epochs, 90.0 + index + (seed == "888"))
                                              for d in DATASETS for seed in ("777", "888")}}
                        for key, epochs in (("full", 200), ("less", 12))}
    data = {"meta_archs": archs, "total_archs": len(archs), "basestr": "C16-N5", "arch2infos": infos,
            "evaluated_indexes": set(infos)}
    if payload is not None:
        data["arch2infos"][1]["full"]["all_results"]["x"] = payload
    torch.save(data, path, _use_new_zipfile_serialization=zipped)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_lookup_reports_the_recorded_accuracies(tmp_path, capsys, zipped):
    path = tmp_path / "bench.pth"
    benchmark(path, zipped)
    # the ResNet cell written without its "none" edges, as the authors' ResNet_CODE
    assert cli.main(["nb201-lookup", "--benchmark", str(path),
                     "|nor_conv_3x3~0|+|nor_conv_3x3~1|+|skip_connect~0|skip_connect~2|"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == RESNET_CELL
    assert "cell 1 of 3 in bench.pth; trained 200 epochs" in out
    # means over seeds 777 (91) and 888 (92): train 90.5, evaluation sets 91.5 + their position
    assert ("cifar100        2 trials  params 0.559 M  FLOPs 78.56 M  train 90.50  x-valid 91.50  x-test 92.50  "
            "ori-test 93.50") in out
    assert cli.main(["nb201-lookup", "--benchmark", str(path), "--epochs", "12", "nb201_resnet"]) == 0
    assert "trained 12 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("genotype, message", [
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "no results recorded for cell 2"),
    ("|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|", "is not among the benchmark's 3 cells"),
    ("darts_v2", "not a NAS-Bench-201 cell"),
    ("|nor_conv_3x3~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 reads node 0 twice"),
    ("|nor_conv_3x3~0|+|none~0|none~1|", "not a NAS-Bench-201 cell"),
])
def test_lookup_of_a_cell_it_cannot_report_is_one_error_line(tmp_path, capsys, genotype, message):
    path = tmp_path / "bench.pth"
    benchmark(path)
    assert cli.main(["nb201-lookup", "--benchmark", str(path), genotype]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_lookup_refuses_a_pickle_that_calls_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "bench.pth"
    benchmark(path, payload=os_system_payload(marker))
    assert cli.main(["nb201-lookup", "--benchmark", str(path), README_CELL]) == 2
    err = capsys.readouterr().err
    assert "refused to read it: it names posix.system, which is not plain data" in err and err.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    ({"meta_archs": [README_CELL], "arch2infos": {0: torch.zeros(2)}}, "it names torch._utils._rebuild_tensor_v2"),
    ({"meta_archs": [README_CELL], "arch2infos": {0: np.zeros(2)}}, "it names numpy"),
    ({"archs": []}, "has no 'meta_archs'"),
    (b"not a pickle at all", "not a readable torch.save or pickle file"),
])
def test_lookup_refuses_files_that_are_not_plain_benchmark_data(tmp_path, capsys, content, message):
    path = tmp_path / "bench.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert cli.main(["nb201-lookup", "--benchmark", str(path), README_CELL]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_lookup_of_a_missing_file_names_it(tmp_path, capsys):
    assert cli.main(["nb201-lookup", "--benchmark", str(tmp_path / "none.pth"), README_CELL]) == 2
    assert "no such file" in capsys.readouterr().err


# -- end to end ---------------------------------------------------------------------------------

def test_a_tiny_search_derives_a_cell_string_that_trains_and_shows(tmp_path, capsys):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "nb201_demo", *TINY, "--set", "search.epochs=1", "--out", str(run)]) == 0
    derived = load_genotype(str(run), {})
    assert set(derived.cells) == {"cell"} and [len(n) for n in derived.cells["cell"].nodes] == [1, 2, 3]
    capsys.readouterr()
    assert cli.main(["show", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == format_cell_string(derived)
    assert cli.main(["train", "--genotype", README_CELL, "--space", "nb201", "--set", "network.cells=1",
                     "--set", "network.channels=4", "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2",
                     "--set", "train.batch_size=16", "--no-progress", "--out", str(tmp_path / "train")]) == 0
    assert "test top1 error" in capsys.readouterr().out


# -- Nesterov momentum (the option nb201_paper and nb201_train set) ----------------------------

def test_the_virtual_step_follows_nesterov_momentum_to_the_next_sgd_iterate():
    torch.manual_seed(0)
    digits = DataInfo((1, 8, 8), 10)
    built = space(cells=1, channels=4)
    net = built.build_supernet(digits).double()
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=0.5), spec=built.arch_spec()).double()
    opt = darts_second_order(DartsOptions(w_nesterov=True, grad_clip=0.0, xi=None), supernet=net, relaxation=relax,
                             task=image_task(digits), epochs=1)
    batches = [(torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))) for _ in range(3)]
    for batch in batches[1:]:  # momentum buffers the virtual step must use
        opt.weight_step(batch)
    lr, nesterov = opt.w_opt.param_groups[0]["lr"], opt.opts
    virtual = opt.virtual_step(batches[0], lr)
    opt.opts = attrs.evolve(nesterov, w_nesterov=False)  # the plain-momentum virtual step: another point
    plain = opt.virtual_step(batches[0], lr)
    opt.opts = nesterov
    opt.weight_step(batches[0])
    assert opt.w_opt.param_groups[0]["nesterov"]

    def distance(ws):
        return max(float((v - w).detach().abs().max()) for v, w in zip(ws, opt.weights))

    assert distance(virtual) < 1e-12 and distance(plain) > 1e-6


@pytest.mark.parametrize("section", ["optimizer", "trainer"])
def test_nesterov_without_momentum_is_a_config_error(tmp_path, capsys, section):
    prefix, command = ("w_", "run") if section == "optimizer" else ("", "train")
    key, flag = f"{section}.{prefix}momentum=0", f"{prefix}nesterov"
    args = [command, "--preset", "nb201_demo", *TINY, "--set", key, "--set", f"{section}.{flag}=true",
            "--out", str(tmp_path / "run")]
    if command == "train":
        args += ["--genotype", README_CELL]
    assert cli.main(args) == 2
    assert "needs a momentum" in capsys.readouterr().err
