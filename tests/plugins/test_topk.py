"""The derived genotype against hand-built strengths."""

from __future__ import annotations

import torch

from nas_core import Cell, Genotype
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.options import CNN_OPS
from nas_darts.topk import TopKDiscretizer, TopKOptions

SPEC = DartsCnnSpace(DartsCnnOptions()).arch_spec()
OP = {name: i for i, name in enumerate(CNN_OPS)}


def strengths_with(choices: dict[int, tuple[str, float]], *, zero_everywhere: float = 0.0) -> torch.Tensor:
    """[14, 8] with a small uniform floor, the zero op at ``zero_everywhere`` and the given
    (op, strength) per row."""
    s = torch.full((14, 8), 0.01)
    s[:, OP["none"]] = zero_everywhere
    for row, (op, value) in choices.items():
        s[row, OP[op]] = value
    return s


def test_hand_built_alpha_gives_the_expected_genotype():
    # rows: node2 <- 0,1 (rows 0,1); node3 <- 0,1,2 (2,3,4); node4 <- 0..3 (5..8); node5 <- 0..4 (9..13)
    normal = strengths_with({0: ("sep_conv_3x3", 0.5), 1: ("dil_conv_5x5", 0.6),
                             2: ("max_pool_3x3", 0.2), 3: ("skip_connect", 0.9), 4: ("sep_conv_5x5", 0.7),
                             5: ("avg_pool_3x3", 0.3), 8: ("dil_conv_3x3", 0.4), 6: ("sep_conv_3x3", 0.1),
                             13: ("skip_connect", 0.8), 11: ("sep_conv_5x5", 0.75), 9: ("max_pool_3x3", 0.7)})
    reduce = strengths_with({0: ("max_pool_3x3", 0.5), 1: ("max_pool_3x3", 0.4)})
    genotype = TopKDiscretizer(TopKOptions()).derive({"normal": normal, "reduce": reduce}, SPEC)
    assert genotype.cells["normal"] == Cell(
        nodes=((("dil_conv_5x5", 1), ("sep_conv_3x3", 0)),
               (("skip_connect", 1), ("sep_conv_5x5", 2)),
               (("dil_conv_3x3", 3), ("avg_pool_3x3", 0)),
               (("skip_connect", 4), ("sep_conv_5x5", 2))),
        concat=(2, 3, 4, 5))
    assert genotype.cells["reduce"].nodes[0] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))


def test_zero_op_is_never_chosen_even_when_strongest():
    s = strengths_with({}, zero_everywhere=0.99)
    s[:, OP["sep_conv_3x3"]] = 0.005  # weaker than the 0.01 floor of the other ops...
    s[:, OP["dil_conv_3x3"]] = 0.02  # ...so this one is the best non-zero op everywhere
    genotype = TopKDiscretizer(TopKOptions()).derive({"normal": s, "reduce": s}, SPEC)
    for cell in genotype.cells.values():
        assert all(op == "dil_conv_3x3" for node in cell.nodes for op, _ in node)


def test_edges_are_ranked_by_their_best_non_zero_op():
    s = strengths_with({2: ("sep_conv_3x3", 0.3), 3: ("skip_connect", 0.2), 4: ("avg_pool_3x3", 0.25)})
    s[3, OP["none"]] = 0.95  # a strong zero op must not promote its edge
    g = TopKDiscretizer(TopKOptions()).derive({"normal": s, "reduce": s}, SPEC)
    assert g.cells["normal"].nodes[1] == (("sep_conv_3x3", 0), ("avg_pool_3x3", 2))


def test_k_option_and_distinct_predecessors():
    s = strengths_with({9: ("sep_conv_3x3", 0.9), 10: ("sep_conv_5x5", 0.8), 11: ("dil_conv_3x3", 0.7)})
    g1 = TopKDiscretizer(TopKOptions(k=1)).derive({"normal": s, "reduce": s}, SPEC)
    assert all(len(node) == 1 for node in g1.cells["normal"].nodes)
    assert g1.cells["normal"].nodes[3] == (("sep_conv_3x3", 0),)
    g3 = TopKDiscretizer(TopKOptions(k=3)).derive({"normal": s, "reduce": s}, SPEC)
    assert [src for _, src in g3.cells["normal"].nodes[3]] == [0, 1, 2]
    assert len(g3.cells["normal"].nodes[0]) == 2  # node 2 has only two predecessors
    for cell in g3.cells.values():
        for node in cell.nodes:
            assert len({src for _, src in node}) == len(node)


def test_derived_genotype_round_trips_json_and_builds():
    torch.manual_seed(0)
    s = {k: torch.softmax(torch.randn(14, 8), -1) for k in ("normal", "reduce")}
    g = TopKDiscretizer(TopKOptions()).derive(s, SPEC)
    assert Genotype.from_json(g.to_json()) == g
    g.validate(CNN_OPS, 2)
