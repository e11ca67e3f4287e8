"""ReinMax as GDAS's estimator (plugin nas_gdas, ``estimator: reinmax``): its gradient against the
published formula worked by hand on a two-op toy, the forward is GDAS's one-hot sample, which is a
draw from Cat(softmax(alpha)); a temperature below 1 is refused; a tiny search end to end."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, refused
from nas_gdas.gumbel import GdasRelaxation, ReinMax
from nas_gdas.options import GdasOptions

from nas_core import ArchSpec, cli


def relaxation(rows: int, ops: int, estimator: str = "reinmax", tau: float = 2.0) -> GdasRelaxation:
    spec = ArchSpec(ops=tuple(f"op{i}" for i in range(ops)), edges={"normal": ((0, 1),) * rows}, num_inputs=1,
                    inputs_per_node=1, zero_op=None)
    relax = GdasRelaxation(GdasOptions(tau_min=1.0, estimator=estimator), spec=spec).double()
    relax.tau.fill_(tau)
    return relax


@pytest.mark.parametrize("sampled", [0, 1])
def test_the_gradient_is_the_published_formula_on_a_two_op_toy(sampled):
    """theta = (log 3, 0): pi = (3/4, 1/4); tau = 2: softmax(theta / 2) = (s, 1 - s), s = sqrt 3 / (sqrt 3 + 1).
    For two ops J(p) g = p0 p1 (g0 - g1) (1, -1), so the gradient is
    (2 pb0 pb1 - pi0 pi1 / 2) (g0 - g1) (1, -1) with pi_bar = ((s, 1 - s) + D) / 2."""
    g0, g1 = 0.3, -1.1
    s = math.sqrt(3) / (math.sqrt(3) + 1)
    pb0 = (s + (sampled == 0)) / 2
    pb1 = 1 - pb0
    expected = (2 * pb0 * pb1 - 0.75 * 0.25 / 2) * (g0 - g1)
    theta = torch.tensor([[math.log(3), 0.0]], dtype=torch.float64, requires_grad=True)
    one_hot = torch.zeros(1, 2, dtype=torch.float64)
    one_hot[0, sampled] = 1
    out = ReinMax.apply(theta, one_hot, torch.tensor(2.0, dtype=torch.float64))
    assert torch.equal(out, one_hot)
    (grad,) = torch.autograd.grad((out * torch.tensor([[g0, g1]], dtype=torch.float64)).sum(), theta)
    assert grad[0].tolist() == pytest.approx([expected, -expected], rel=1e-14)


def test_the_relaxation_forwards_gdas_one_hot_sample_and_backpropagates_reinmax():
    relax = relaxation(rows=3, ops=4)
    with torch.no_grad():
        relax.alphas["normal"].copy_(torch.tensor([[0.5, -0.2, 1.0, 0.0], [2.0, 0.1, 0.3, -1.0], [0.0] * 4]))
    draw = relax.sample(torch.Generator().manual_seed(7))
    straight = relaxation(rows=3, ops=4, estimator="straight_through")
    straight.load_state_dict(relax.state_dict())
    mix, st = relax.weights(draw), straight.weights(draw)
    a = relax.alphas["normal"]
    index = (torch.log_softmax(a, -1) + draw["normal"]).argmax(-1)  # Gumbel-max: a draw from Cat(softmax(alpha))
    assert torch.equal(mix["normal"].detach(), torch.nn.functional.one_hot(index, 4).double())
    assert mix.chosen["normal"] == st.chosen["normal"] == tuple(index.tolist())
    g = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (got,) = torch.autograd.grad((mix["normal"] * g).sum(), a)
    with torch.no_grad():  # the published formula, written out row by row
        pi, d = torch.softmax(a, -1), mix["normal"]
        pb = (torch.softmax(a / 2.0, -1) + d) / 2
        jvp = lambda p: p * g - p * (p * g).sum(-1, keepdim=True)
        expected = 2 * jvp(pb) - jvp(pi) / 2
    assert torch.allclose(got, expected, rtol=1e-13, atol=1e-15)
    (st_grad,) = torch.autograd.grad((st["normal"] * g).sum(), straight.alphas["normal"])
    assert not torch.allclose(got, st_grad)  # a different estimator of the same sample's gradient


def test_the_samples_follow_softmax_alpha():
    relax = relaxation(rows=20000, ops=3)
    probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    with torch.no_grad():
        relax.alphas["normal"].copy_(probs.log().expand(20000, 3))
    chosen = torch.tensor(relax.weights(relax.sample(torch.Generator().manual_seed(0))).chosen["normal"])
    freq = torch.bincount(chosen, minlength=3).double() / 20000
    assert torch.allclose(freq, probs, atol=0.015)  # about 4 standard deviations


def test_the_demo_preset_keeps_tau_at_or_above_1(registries):
    from nas_core.config import resolve

    demo = resolve(registries, [], preset="reinmax_demo")
    r = demo.relaxation.options
    assert (demo.relaxation.name, r.estimator, r.tau_max, r.tau_min) == ("gdas", "reinmax", 10.0, 1.0)
    assert resolve(registries, [], preset="gdas_demo").relaxation.options.estimator == "straight_through"


def test_a_tiny_reinmax_search_end_to_end(tmp_path):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "reinmax_demo", *TINY, "--set", "search.epochs=2", "--out", str(run)]) == 0
    log = (run / "log.txt").read_text()
    assert "tau=10 " in log and "tau=1 " in log
    assert float(log.split("arch_grad_norm=")[1].split()[0]) > 0
    assert (run / "genotype.json").is_file()


BAD = [
    (["--set", "relaxation.tau_min=0.5"],
     "invalid relaxation option: estimator reinmax needs tau_min >= 1 (got 0.5): ReinMax refuses a temperature below 1"),
    (["--set", "relaxation.estimator=reinforce"], "invalid relaxation option: 'estimator' must be in"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_reinmax_options_are_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "reinmax_demo", *TINY, "--set", "search.epochs=1", *args],
                  tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
