"""The DARTS text form: safe parsing, writing back, hostile input; loading genotypes by source."""

from __future__ import annotations

import pytest

from nas_core.errors import GenotypeError
from nas_core.genotype import Genotype
from nas_core.genotype_io import format_darts_text, load_genotype, parse_darts_text
from nas_darts.options import CNN_OPS

# as printed by the DARTS code's genotypes.py (DARTS_V2), with the mixed concat styles of the issue
V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
           "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
           "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
           "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
           "reduce_concat=[2, 3, 4, 5])")
RNN_TEXT = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
            "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")


def test_text_round_trip_is_identical_and_matches_the_registered_cell(registries):
    parsed = parse_darts_text(V2_TEXT)
    assert format_darts_text(parsed.genotype, parsed.concat_as_range) == V2_TEXT
    assert parsed.genotype == registries.genotypes["darts_v2"][0]
    normal = parsed.genotype.cells["normal"]
    assert normal.nodes[3] == (("skip_connect", 0), ("dil_conv_3x3", 2)) and normal.concat == (2, 3, 4, 5)
    rnn = parse_darts_text(RNN_TEXT)
    assert format_darts_text(rnn.genotype, rnn.concat_as_range) == RNN_TEXT
    assert rnn.genotype == registries.genotypes["darts_rnn"][0]
    assert all(len(node) == 1 for node in rnn.genotype.cells["recurrent"].nodes)
    # our JSON and the text form describe the same value
    assert Genotype.from_json(parsed.genotype.to_json()) == parsed.genotype


@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('echo pwned')", "expected Genotype(...)"),
    ("Genotype(normal=__import__('os').system('x'), normal_concat=[2])", "expected a list of (op, input) pairs"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=eval('range(2, 3)'))",
     "expected range(a, b) or a list"),
    ("Genotype(normal=[(lambda: 0, 0)], normal_concat=[2])", "expected ('op_name', input_index)"),
    ("Genotype(normal=[('sep_conv_3x3', 0).__class__], normal_concat=[2])", "expected ('op_name', input_index)"),
    ("Genotype(normal=[('sep_conv_3x3', 1 + 1)], normal_concat=[2])", "expected an integer"),
    ("Genotype(normal=[(f'{open(\"/etc/passwd\")}', 0)], normal_concat=[2])", "expected ('op_name', input_index)"),
    ("Genotype(**{'normal': []})", "** arguments are not allowed"),
    ("Genotype([('sep_conv_3x3', 0)])", "use keyword arguments"),
    ("Genotype(normal=[('sep_conv_3x3', 0)]", "not of the form Genotype"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0)], normal_concat=range(2, 4))",
     "3 (op, input) pairs do not split evenly over the 2 nodes 2..3"),
    ("Genotype(normal=[('sep_conv_3x3', 0)])", "has no normal_concat"),
    ("Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce_concat=[2])", "has no cell 'reduce'"),
    ("Genotype(normal=[('sep_conv_3x3', 0)], normal=[('sep_conv_3x3', 0)], normal_concat=[2])", "given twice"),
    ("Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=range(0, 1))", "node 0 is an input node"),
])
def test_malformed_or_hostile_text_is_an_error_saying_what_and_where(text, message):
    with pytest.raises(GenotypeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
                       .replace("*", r"\*").replace("[", r"\[").replace("]", r"\]")) as e:
        parse_darts_text(text)
    assert "\n" not in str(e.value)


def test_errors_point_at_line_and_column():
    with pytest.raises(GenotypeError, match=r"input index at line 2, column 26: expected an integer, got 'x'"):
        parse_darts_text("Genotype(normal=[('sep_conv_3x3', 0),\n        ('skip_connect', x)], normal_concat=[2])")


def test_semantic_checks_unknown_op_and_index_out_of_range():
    bad_op = parse_darts_text("Genotype(normal=[('conv_7x7', 0), ('sep_conv_3x3', 1)], normal_concat=[2])").genotype
    with pytest.raises(GenotypeError, match=r"cell 'normal', node 2: unknown op 'conv_7x7'"):
        bad_op.validate(CNN_OPS, 2)
    bad_src = parse_darts_text("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 5)], normal_concat=[2])").genotype
    with pytest.raises(GenotypeError, match=r"node 2: input 5 out of range 0..1"):
        bad_src.validate(CNN_OPS, 2)


def test_load_genotype_from_file_run_dir_and_name(tmp_path, registries):
    v2 = registries.genotypes["darts_v2"][0]
    (tmp_path / "g.txt").write_text(V2_TEXT + "\n")
    (tmp_path / "g.json").write_text(v2.to_json())
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(v2.to_json())
    for source in (str(tmp_path / "g.txt"), str(tmp_path / "g.json"), str(run), "darts_v2"):
        assert load_genotype(source, registries.genotypes) == v2
    with pytest.raises(GenotypeError, match="did you mean 'darts_v2'.*registered genotypes: darts_rnn, darts_v1, darts_v2"):
        load_genotype("darts_v3", registries.genotypes)
    (tmp_path / "bad.txt").write_text("Genotype(normal=os.system('x'), normal_concat=[2])")
    with pytest.raises(GenotypeError, match="bad.txt"):
        load_genotype(str(tmp_path / "bad.txt"), registries.genotypes)
    with pytest.raises(GenotypeError, match="has no genotype.json"):
        load_genotype(str(tmp_path), registries.genotypes)


def test_the_darts_recurrent_text_form_reads_and_writes_with_a_bare_concat(registries):
    rnn = registries.genotypes["darts_rnn"][0]
    text = format_darts_text(rnn)
    assert text.startswith("Genotype(recurrent=[('sigmoid', 0), ") and text.endswith(", concat=range(1, 9))")
    assert parse_darts_text(text).genotype == rnn
    ours = text.replace(", concat=", ", recurrent_concat=")
    assert parse_darts_text(ours).genotype == rnn  # our own cell-named form too
    with pytest.raises(GenotypeError, match="bare 'concat' needs exactly one cell"):
        parse_darts_text("Genotype(normal=[('a', 0)], reduce=[('a', 0)], concat=[1])")


# -- bounds (issue 16): nothing is built, evaluated or drawn beyond them ------------------------------

def _text(normal: str, concat: str) -> str:
    return f"Genotype(normal={normal}, normal_concat={concat})"


PAIR = "('sep_conv_3x3', 0)"


@pytest.mark.parametrize("text, message", [
    (_text(f"[{PAIR}]", "range(2, 10000000000)"),
     "normal_concat at line 1, column 63: 10000000000 is not a node index (at most 10000)"),
    (_text(f"[{PAIR}]", "range(2, 200)"), "cell 'normal' has 198 intermediate nodes; a cell may have at most 64"),
    (_text(f"[{PAIR}] * 2", "[2]"), "expected a list of (op, input) pairs"),
    (_text(f"[{f'{PAIR}, ' * 600}]", "range(2, 4)"), "has 600 (op, input) pairs; a cell may have at most 512"),
    (_text(f"[('sep_conv_3x3', 0x{'f' * 4000})]", "[2]"), "<an integer of about 4817 digits> is not a node index"),
    (_text(f"[('sep_conv_3x3', {'-' * 50_000}1)]", "[2]"), "nested far too deeply"),
    (_text(f"[('sep_conv_3x3', {'(' * 5000}1{')' * 5000})]", "[2]"), "not of the form Genotype(...)"),
    (_text(f"[{PAIR}]", "[2]") + "\0", "not of the form Genotype(...)"),
    (_text(f"[('{'x' * 90_000}', 1 + 1)]", "[2]"), "expected an integer, got '1 + 1'"),
    (_text(f"[{PAIR}, {'x' * 90_000}]", "[2]"), "(90000 characters)"),
])
def test_text_beyond_the_bounds_is_refused_before_anything_is_built(text, message):
    with pytest.raises(GenotypeError) as e:
        parse_darts_text(text)
    assert message in str(e.value) and len(str(e.value)) < 300


def _json(nodes: str, concat: str = "[2]") -> str:
    return f'{{"normal": {{"nodes": {nodes}, "concat": {concat}}}}}'


PAIR_JSON = '["sep_conv_3x3", 0]'
NODE = f"[{PAIR_JSON}, {PAIR_JSON}]"
CELLS_17 = "{" + ", ".join(f'"c{i}": {{"nodes": [], "concat": []}}' for i in range(17)) + "}"


@pytest.mark.parametrize("text, message", [
    (_json("5"), "'nodes' must be a list of nodes, each a list of [op, input] pairs, got 5"),
    (_json("null"), "'nodes' must be a list of nodes"),
    (_json("[]", "2"), "'concat' must be a list of node indices, got 2"),
    (_json(f"[{', '.join([NODE] * 65)}]"), "has 65 intermediate nodes; a cell may have at most 64"),
    (_json(f"[[{', '.join([PAIR_JSON] * 513)}]]"), "has 513 (op, input) pairs"),
    (_json("[]", f"[{', '.join(['2'] * 129)}]"), "has 129 concatenated nodes"),
    (CELLS_17, "17 cell types; a genotype may have at most 16"),
    (_json(f'[[["sep_conv_3x3", {"9" * 5000}]]]'), "(5000 characters) is not a node index"),
    (_json('[[["sep_conv_3x3", 12345]]]'), "input index: 12345 is not a node index (at most 10000)"),
    (_json('[[["sep_conv_3x3", 123456]]]'), "the number '123456' is not a node index"),
    (_json("[]", "[-20000]"), "concat: -20000 is not a node index"),
    ("[" * 100_000 + "]" * 100_000, "nested far deeper than the five levels of one"),
    ('{"' + "n" * 100_000 + '": 5}', "(100000 characters): expected exactly the keys"),
])
def test_json_beyond_the_bounds_is_refused_before_anything_is_built(text, message):
    with pytest.raises(GenotypeError) as e:
        Genotype.from_json(text)
    assert message in str(e.value) and len(str(e.value)) < 300


def test_cells_built_in_code_are_bounded_too_where_they_are_checked_and_drawn():
    from nas_core.draw import cell_graph
    from nas_core.genotype import Cell

    huge = Cell(tuple((("sep_conv_3x3", 0),) for _ in range(10_000)), (2,))
    with pytest.raises(GenotypeError, match="cell 'normal' has 10000 intermediate nodes"):
        Genotype({"normal": huge}).validate(CNN_OPS, 2)
    with pytest.raises(GenotypeError, match="has 10000 intermediate nodes"):
        cell_graph("normal", huge)
    long_op = Genotype({"normal": Cell(((("o" * 1_000_000, 0),),), (2,))})
    with pytest.raises(GenotypeError) as e:
        long_op.validate(CNN_OPS, 2)
    assert "(1000000 characters); valid ops: none" in str(e.value) and len(str(e.value)) < 300


def test_files_and_names_beyond_the_bounds(tmp_path, registries):
    big = tmp_path / "big.json"
    big.write_text(" " * 1_000_001)
    with pytest.raises(GenotypeError, match="is larger than 1000000 bytes"):
        load_genotype(str(big), registries.genotypes)
    (tmp_path / "latin1.json").write_bytes(b'{"caf\xe9": 1}')
    with pytest.raises(GenotypeError, match="not UTF-8 text"):
        load_genotype(str(tmp_path / "latin1.json"), registries.genotypes)
    with pytest.raises(GenotypeError) as e:  # too long for a path name: not an OSError
        load_genotype("g" * 100_000, registries.genotypes)
    assert "(100000 characters) is neither a file" in str(e.value) and len(str(e.value)) < 300
