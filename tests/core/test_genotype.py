from __future__ import annotations

import json

import pytest

from nas_core.errors import GenotypeError
from nas_core.genotype import Cell, Genotype
from nas_darts.options import CNN_OPS

CELL = Cell(((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), (("skip_connect", 0), ("dil_conv_3x3", 2))), (2, 3))
GENOTYPE = Genotype({"normal": CELL, "reduce": CELL})


def test_json_round_trip_is_canonical():
    text = GENOTYPE.to_json()
    assert Genotype.from_json(text) == GENOTYPE
    assert Genotype.from_json(text).to_json() == text
    assert json.loads(text)["normal"]["nodes"][1] == [["skip_connect", 0], ["dil_conv_3x3", 2]]


@pytest.mark.parametrize("text, message", [
    ("not json", "not valid JSON"),
    ("[]", "expected an object"),
    ('{"normal": {"nodes": []}}', "exactly the keys"),
    ('{"normal": {"nodes": [[["sep_conv_3x3"]]], "concat": [2]}}', "expected [op_name, input_index]"),
    ('{"normal": {"nodes": [[["sep_conv_3x3", "0"]]], "concat": [2]}}', "expected [op_name, input_index]"),
    ('{"normal": {"nodes": [[]], "concat": [2]}}', "non-empty list"),
])
def test_malformed_json_names_the_problem(text, message):
    with pytest.raises(GenotypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Genotype.from_json(text)


def test_validate_names_cell_node_and_valid_ops():
    bad_op = Genotype({"normal": Cell(((("conv_9x9", 0), ("sep_conv_3x3", 1)),), (2,))})
    with pytest.raises(GenotypeError, match=r"cell 'normal', node 2: unknown op 'conv_9x9'; valid ops: none"):
        bad_op.validate(CNN_OPS, 2)
    bad_src = Genotype({"normal": Cell(((("sep_conv_3x3", 0), ("sep_conv_3x3", 2)),), (2,))})
    with pytest.raises(GenotypeError, match=r"node 2: input 2 out of range 0..1"):
        bad_src.validate(CNN_OPS, 2)
    bad_concat = Genotype({"normal": Cell(((("sep_conv_3x3", 0),),), (7,))})
    with pytest.raises(GenotypeError, match="concat node 7"):
        bad_concat.validate(CNN_OPS, 2)
    GENOTYPE.validate(CNN_OPS, 2)
