"""The darts_rnn space: the DARTS hypergradient on a recurrent supernet with carried hidden state,
derivation (k = 1, never none), the paper model's size, genotypes in and out."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from conftest import StepRun
from nas_core import DataInfo, Genotype, GenotypeError, cli
from nas_core.genotype_io import format_darts_text, parse_darts_text
from nas_darts.architect import DartsOptions, darts_first_order, darts_second_order
from nas_darts.options import DartsRnnOptions, TopKOptions
from nas_darts.rnn_space import DartsRnnSpace, cell_edges
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
from nas_darts.topk import TopKDiscretizer
from nas_tasks.language_model import LanguageModelTask, Window
from nas_tasks.options import LanguageModelOptions
from nas_tasks.text_datasets import TokenCorpus

VOCAB = 12
DATA = DataInfo((), VOCAB)
NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)


def registered(name: str) -> Genotype:
    from nas_core.plugins import collect_registries, make_plugin_manager

    return collect_registries(make_plugin_manager()).genotypes[name][0]


def toy_task(tar_beta: float = 1e-2, ar_alpha: float = 1e-2) -> LanguageModelTask:
    ids = torch.arange(60) % VOCAB
    corpus = TokenCorpus("toy", tuple(f"w{i}" for i in range(VOCAB)), ids, ids, ids)
    return LanguageModelTask(LanguageModelOptions(bptt=4, tar_beta=tar_beta, ar_alpha=ar_alpha), data=corpus)


def window(gen: torch.Generator, steps: int = 4, batch: int = 3) -> Window:
    tokens = torch.randint(0, VOCAB, (steps + 1, batch), generator=gen)
    return Window(tokens[:-1], tokens[1:])


def make(second_order: bool, *, xi: float | None, seed: int = 0, **opt_kw):
    """A float64 recurrent supernet (3 nodes, no dropout: every pass is deterministic) whose SGD holds
    momentum buffers, two windows, and a hidden state carried into each of them."""
    torch.manual_seed(seed)
    space = DartsRnnSpace(DartsRnnOptions(emb=5, hid=5, nodes=3, init_range=0.5, **NO_DROPOUT))
    net = space.build_supernet(DATA).double()
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=0.5), spec=space.arch_spec()).double()
    factory = darts_second_order if second_order else darts_first_order
    opt = factory(DartsOptions(xi=xi, fd_eps=1e-6, **opt_kw), supernet=net, relaxation=relax, task=toy_task(),
                  epochs=1)
    gen = torch.Generator().manual_seed(seed + 1)
    state = None
    for _ in range(2):  # warm steps: momentum buffers, and a hidden state that came from the data
        state = opt.weight_step(window(gen), state).state
    h_val = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    return opt, window(gen), window(gen), state, h_val


def exact_hypergradient(opt, train, val, h_train, h_val, xi):
    """d/d alpha of L_val(w - xi * (grad_w L_train + wd*w + momentum*buf), alpha), by autograd
    through the virtual step, both losses from the hidden states carried into the windows."""
    net, relax, task = opt.net, opt.relax, opt.task
    loss_t = task.forward(lambda *i: net(*i, arch_weights=relax.weights()), train, h_train).loss
    grads = torch.autograd.grad(loss_t, opt.weights, create_graph=True)
    w_virtual = []
    for w, g in zip(opt.weights, grads):
        buf = opt.w_opt.state[w]["momentum_buffer"]
        w_virtual.append(w.detach() - xi * (g + opt.opts.w_weight_decay * w.detach() + opt.opts.w_momentum * buf))
    params = dict(zip(opt.names, w_virtual))
    out = task.forward(lambda *i: functional_call(net, params, i, {"arch_weights": relax.weights()}), val, h_val)
    return list(torch.autograd.grad(out.loss, opt.alphas))


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


@pytest.mark.parametrize("seed", [0, 1])
def test_second_order_gradient_matches_autograd_with_carried_hidden_state(seed):
    xi = 0.5
    opt, train, val, h_train, h_val = make(True, xi=xi, seed=seed, grad_clip=0.0)
    assert h_train is not None and h_train.shape == (3, 5)
    out, ours = opt.arch_gradient(train, val, h_train, h_val)
    exact = exact_hypergradient(opt, train, val, h_train, h_val, xi)
    err = float((flat(ours) - flat(exact)).norm() / flat(exact).norm())
    assert err < 1e-4
    # teeth: the state matters (a zero hidden state gives another gradient), as does the Hessian term
    other = exact_hypergradient(opt, train, val, None, None, xi)
    assert float((flat(other) - flat(exact)).norm() / flat(exact).norm()) > 100 * err
    first = darts_first_order(opt.opts, supernet=opt.net, relaxation=opt.relax, task=opt.task, epochs=1)
    _, at_w = first.arch_gradient(train, val, h_train, h_val)
    assert float((flat(at_w) - flat(exact)).norm() / flat(exact).norm()) > 100 * err
    assert out.state.shape == (3, 5) and not out.state.requires_grad


def test_exact_hvp_gives_the_hypergradient_through_the_recurrent_cell():
    opt, train, val, h_train, h_val = make(True, xi=0.5, grad_clip=0.0, hvp="exact")
    _, ours = opt.arch_gradient(train, val, h_train, h_val)
    exact = exact_hypergradient(opt, train, val, h_train, h_val, 0.5)
    assert float((flat(ours) - flat(exact)).norm() / flat(exact).norm()) < 1e-10


def test_clipped_virtual_step_is_the_next_clipped_sgd_iterate():
    opt, train, _, h_train, _ = make(True, xi=None, grad_clip=1e-3, clip_virtual_step=True)
    lr = opt.w_opt.param_groups[0]["lr"]
    virtual = opt.virtual_step(train, lr, h_train)
    opt.weight_step(train, h_train)  # the real step clips its gradient to 1e-3
    assert torch.allclose(flat(virtual), flat(opt.weights), rtol=0, atol=1e-12)


def test_a_search_step_carries_both_states():
    opt, train, val, h_train, h_val = make(True, xi=None)
    result = opt.step(train, val, {"weights": h_train, "arch": h_val}, StepRun())
    assert set(result.state) == {"weights", "arch"}
    assert all(s.shape == (3, 5) for s in result.state.values())


def test_hand_built_alpha_gives_the_expected_cell_and_never_none():
    target = registered("darts_rnn")
    spec = DartsRnnSpace(DartsRnnOptions()).arch_spec()
    edges = spec.edges["recurrent"]
    assert spec.inputs_per_node == 1 and spec.zero_op == "none" and len(edges) == 36 == len(cell_edges(8))
    assert spec.ops == ("none", "tanh", "relu", "sigmoid", "identity")
    strengths = torch.full((36, 5), 0.1)
    strengths[:, 0] = 0.9  # none is the strongest op of every edge: never chosen
    for j, ((op, src),) in enumerate(target.cells["recurrent"].nodes, 1):
        strengths[edges.index((src, j)), spec.ops.index(op)] = 0.5
        if src + 1 < j:  # a runner-up from another predecessor, weaker
            strengths[edges.index((src + 1, j)), spec.ops.index("tanh")] = 0.4
    derived = TopKDiscretizer(TopKOptions()).derive({"recurrent": strengths}, spec)
    assert derived == target
    assert all(len(node) == 1 and node[0][0] != "none" for node in derived.cells["recurrent"].nodes)


def test_paper_evaluation_model_has_23m_parameters():
    from nas_core.train import measure

    space = DartsRnnSpace(DartsRnnOptions(emb=850, hid=850, dropoute=0.1))
    network = space.build_network(registered("darts_rnn"), DataInfo((), 10_000))
    plain = sum(p.numel() for p in network.parameters())
    # embedding (tied decoder) + decoder bias + W_0 + 8 node matrices
    assert plain == 10_000 * 850 + 10_000 + 1700 * 1700 + 8 * 850 * 1700 == 22_960_000
    assert abs(plain - 23e6) / 23e6 < 0.03
    sizes = measure(network, toy_task().example_inputs(torch.device("cpu")))
    assert sizes["params"] == plain  # inference uses every parameter


def test_darts_rnn_genotype_round_trips_through_the_darts_text_form():
    genotype = registered("darts_rnn")
    text = format_darts_text(genotype)
    assert text.startswith("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1)")
    assert text.endswith("], concat=range(1, 9))")  # the DARTS code's own recurrent form
    assert parse_darts_text(text).genotype == genotype
    DartsRnnSpace(DartsRnnOptions()).validate(genotype)


def test_genotypes_of_the_other_space_are_one_line_errors():
    rnn, cnn = DartsRnnSpace(DartsRnnOptions()), registered("darts_v2")
    with pytest.raises(GenotypeError, match=r"cells \['normal', 'reduce'\]; a darts_rnn genotype has one cell"):
        rnn.build_network(cnn, DATA)
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace

    with pytest.raises(GenotypeError, match="this space's cells are"):
        DartsCnnSpace(DartsCnnOptions()).validate(registered("darts_rnn"))
    two_inputs = Genotype.from_dict({"recurrent": {"nodes": [[["tanh", 0], ["relu", 0]]], "concat": [1]}})
    with pytest.raises(GenotypeError, match="exactly one"):
        rnn.validate(two_inputs)
    with pytest.raises(GenotypeError, match="unknown op 'none'"):
        rnn.validate(Genotype.from_dict({"recurrent": {"nodes": [[["none", 0]]], "concat": [1]}}))


def test_networks_shapes_state_and_dropout():
    torch.manual_seed(0)
    space = DartsRnnSpace(DartsRnnOptions(emb=6, hid=6, nodes=8, dropoute=0.1))
    net = space.build_network(registered("darts_rnn"), DATA)
    tokens = torch.randint(0, VOCAB, (4, 2))
    net.eval()
    logits, h, raw, dropped = net(tokens, None)
    assert logits.shape == (4, 2, VOCAB) and h.shape == (2, 6) and raw.shape == dropped.shape == (4, 2, 6)
    assert torch.equal(h, raw[-1]) and torch.equal(raw, dropped)
    again, _, _, _ = net(tokens, h)
    assert not torch.allclose(again, logits)  # the carried state matters
    net.train()
    _, _, raw_t, dropped_t = net(tokens, None)
    assert not torch.equal(raw_t, dropped_t)
    supernet = space.build_supernet(DATA)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec())
    out = supernet(tokens, None, arch_weights=relax.weights())
    assert out[0].shape == (4, 2, VOCAB) and out[1].shape == (2, 6)


def test_nas_show_draws_the_recurrent_cell(tmp_path, capsys):
    assert cli.main(["show", "darts_rnn", "--out", str(tmp_path / "rnn")]) == 0
    out = capsys.readouterr().out
    assert "Genotype(recurrent=[('sigmoid', 0)" in out
    assert (tmp_path / "rnn_recurrent.dot").is_file()
    assert "h_{t}" in (tmp_path / "rnn_recurrent.dot").read_text()
