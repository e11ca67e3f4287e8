"""The nt_asgd trainer: the public code's non-monotone trigger, and the averaged weights being the
ones evaluated and checkpointed."""

from __future__ import annotations

import torch
from torch import nn

from conftest import StepRun
from nas_core.checkpoint import load_checkpoint, save_checkpoint
from nas_tasks.asgd import NtAsgdTrainer
from nas_tasks.language_model import Window
from nas_tasks.options import NtAsgdOptions


class Epoch:
    def __init__(self, epoch: int):
        self.epoch = epoch


class LinearTask:
    """A stand-in task: the model maps inputs to a scalar loss."""

    def forward(self, model, batch, state):
        from nas_core import Outcome

        loss = model(batch[0]).pow(2).mean()
        return Outcome(loss, None, {"loss": loss.detach()}, 1)


def make(**kw) -> tuple[NtAsgdTrainer, nn.Module]:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    return NtAsgdTrainer(NtAsgdOptions(**{"lr": 0.1, "grad_clip": 0.0, **kw}), network=net, task=LinearTask(),
                         epochs=10), net


def batch(seed: int, lr_scale: float = 1.0) -> Window:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    return Window(x, x, lr_scale)


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()


def test_switches_exactly_when_the_trigger_fires():
    losses = [10, 9, 8, 7, 7.5, 7.6, 7.7, 8.1, 6.0]
    trainer, _ = make(nonmono=3)
    switched = []
    for epoch, loss in enumerate(losses):
        metrics = trainer.end_epoch(Epoch(epoch), {"valid_loss": loss})
        switched.append(metrics["averaging"])
    # 7.5, 7.6 and 7.7 are worse than the epoch before but not than the best of the epochs more
    # than 3 back (10, 9, 8); 8.1 is worse than min(10, 9, 8, 7) = 7: the switch, after epoch 8
    assert switched == [0.0] * 7 + [1.0, 1.0]
    assert trainer.switched_at == 7 and isinstance(trainer.optimizer, torch.optim.ASGD)
    assert trainer.history == losses[:8]  # no longer recorded once averaging
    never, _ = make(nonmono=3)
    for epoch, loss in enumerate([10, 9, 8, 7, 6, 5, 4, 3]):
        assert never.end_epoch(Epoch(epoch), {"valid_loss": loss})["averaging"] == 0.0
    assert never.end_epoch(Epoch(9), {"train_loss": 99.0})["averaging"] == 0.0  # no validation: no decision


def test_averaged_weights_are_evaluated_and_checkpointed(tmp_path):
    trainer, net = make(nonmono=0)
    trainer.step(batch(0), {}, StepRun())
    trainer.end_epoch(Epoch(0), {"valid_loss": 1.0})
    assert not trainer.averaging  # nonmono=0 needs one earlier loss
    trainer.end_epoch(Epoch(1), {"valid_loss": 2.0})
    assert trainer.averaging
    iterates = []
    for seed in (1, 2, 3):
        trainer.step(batch(seed), {}, StepRun())
        iterates.append(flat(net))
    current = flat(net)
    ax = torch.cat([a.reshape(-1) for a in trainer.averages()])
    # torch's ASGD (t0=0, as the public code) averages the iterates from its second step on
    assert torch.allclose(ax, (iterates[1] + iterates[2]) / 2, atol=1e-7)
    with trainer.evaluating():
        assert torch.equal(flat(net), ax)  # what validation and the test see
    assert torch.equal(flat(net), current)  # and back to the trained weights

    save_checkpoint(tmp_path / "c.pt", {"network": net.state_dict(), "trainer": trainer.state_dict()})
    state = load_checkpoint(tmp_path / "c.pt")
    resumed, net2 = make(nonmono=0)
    net2.load_state_dict(state["network"])
    resumed.load_state_dict(state["trainer"])
    assert resumed.averaging and resumed.history == [1.0, 2.0]
    assert torch.equal(torch.cat([a.reshape(-1) for a in resumed.averages()]), ax)
    for t, n in ((trainer, net), (resumed, net2)):  # one more step each: the same weights and averages
        t.step(batch(4), {}, StepRun())
    assert torch.equal(flat(net), flat(net2))
    assert torch.equal(torch.cat([a.reshape(-1) for a in trainer.averages()]),
                       torch.cat([a.reshape(-1) for a in resumed.averages()]))


def test_step_lr_follows_the_window_length():
    full, net_a = make(weight_decay=0.0)
    half, net_b = make(weight_decay=0.0)
    fixed, net_c = make(weight_decay=0.0, scale_lr_by_window=False)
    before = flat(net_a)
    full.step(batch(0, 1.0), {}, StepRun())
    half.step(batch(0, 0.5), {}, StepRun())
    fixed.step(batch(0, 0.5), {}, StepRun())
    assert torch.allclose(flat(net_b) - before, (flat(net_a) - before) / 2, atol=1e-7)
    assert torch.equal(flat(net_c), flat(net_a))
    assert full.optimizer.param_groups[0]["lr"] == 0.1  # restored after the step
