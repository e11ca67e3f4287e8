"""DARTS written the textbook way, as a baseline to measure against. Do not optimise it.

Every candidate op is computed separately (the zero op too), each conv op applies its own ReLU,
an edge is a Python sum of weight * op(x), the network owns its alphas and computes their
softmax in forward, and the unrolled step runs on a deep copy of the network. Modules are built
in the same order as ``nas_darts.cnn_space`` so parameters correspond one to one
(:func:`copy_from`), which lets tests check that both engines compute the same numbers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def relu_conv_bn(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=False))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride, 1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    k = int(name[-1])
    if name.startswith("sep_conv"):
        return nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=False),
            nn.ReLU(), nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=False))
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False))


class MixedOp(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, stride) for name in OPS)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Cell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.steps = reduction, steps
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else relu_conv_bn(c_pp, c)
        self.pre1 = relu_conv_bn(c_p, c)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1)
                                   for i in range(steps) for j in range(2 + i))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[2:], dim=1)


class Network(nn.Module):
    def __init__(self, c: int = 16, num_classes: int = 10, cells: int = 8, in_channels: int = 3, steps: int = 4):
        super().__init__()
        self.args = (c, num_classes, cells, in_channels, steps)
        c_cur = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_cur, 3, padding=1, bias=False), nn.BatchNorm2d(c_cur))
        c_pp, c_p, c_cur = c_cur, c_cur, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cells):
            reduction = i in (cells // 3, 2 * cells // 3)
            if reduction:
                c_cur *= 2
            self.cells.append(Cell(steps, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c_cur
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        edges = sum(2 + i for i in range(steps))
        # the alphas live on the network and outside parameters(), as in the original code
        self.alphas = [(1e-3 * torch.randn(edges, len(OPS))).requires_grad_(True) for _ in range(2)]

    def arch_parameters(self) -> list[Tensor]:
        return self.alphas

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = F.softmax(self.alphas[1] if cell.reduction else self.alphas[0], dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self(x), y)


def copy_from(reference: Network, supernet: nn.Module, alphas: dict[str, Tensor]) -> None:
    """Load our supernet's weights and alphas into the reference (same module order)."""
    ours = list(supernet.parameters())
    theirs = list(reference.parameters())
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    with torch.no_grad():
        for t, o in zip(theirs, ours):
            assert t.shape == o.shape, (t.shape, o.shape)
            t.copy_(o)
        reference.alphas[0].copy_(alphas["normal"])
        reference.alphas[1].copy_(alphas["reduce"])


class Architect:
    """The DARTS outer step, textbook style: an unrolled copy of the network per step."""

    def __init__(self, model: Network, *, momentum: float = 0.9, weight_decay: float = 3e-4,
                 arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3):
        self.model, self.momentum, self.weight_decay = model, momentum, weight_decay
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                          weight_decay=arch_weight_decay)

    def step(self, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], eta: float,
             w_optimizer: torch.optim.Optimizer, unrolled: bool) -> None:
        self.optimizer.zero_grad()
        if unrolled:
            self.backward_unrolled(train, val, eta, w_optimizer)
        else:
            self.model.loss(*val).backward()
        self.optimizer.step()

    def unrolled_model(self, train: tuple[Tensor, Tensor], eta: float, w_optimizer: torch.optim.Optimizer) -> Network:
        loss = self.model.loss(*train)
        params = list(self.model.parameters())
        grads = torch.autograd.grad(loss, params)
        unrolled = copy.deepcopy(self.model)
        for t in [*unrolled.parameters(), *unrolled.alphas]:
            t.grad = None  # a deep copy also copies stale gradients
        with torch.no_grad():
            for p, g, q in zip(params, grads, unrolled.parameters()):
                buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
                moment = buf * self.momentum if buf is not None else torch.zeros_like(p)
                q.copy_(p - eta * (moment + g + self.weight_decay * p))
        return unrolled

    def backward_unrolled(self, train, val, eta: float, w_optimizer: torch.optim.Optimizer) -> None:
        unrolled = self.unrolled_model(train, eta, w_optimizer)
        unrolled.loss(*val).backward()
        d_alpha = [a.grad for a in unrolled.arch_parameters()]
        vector = [p.grad for p in unrolled.parameters()]
        implicit = self.hessian_vector_product(vector, train)
        for a, g, ig in zip(self.model.arch_parameters(), d_alpha, implicit):
            a.grad = g - eta * ig

    def hessian_vector_product(self, vector: list[Tensor], train, r: float = 1e-2) -> list[Tensor]:
        eps = r / torch.cat([v.reshape(-1) for v in vector]).norm()
        params = list(self.model.parameters())
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(eps * v)
        grads_p = torch.autograd.grad(self.model.loss(*train), self.model.arch_parameters())
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.sub_(2 * eps * v)
        grads_n = torch.autograd.grad(self.model.loss(*train), self.model.arch_parameters())
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(eps * v)
        return [(x - y) / (2 * eps) for x, y in zip(grads_p, grads_n)]


def weight_step(model: Network, train: tuple[Tensor, Tensor], w_optimizer: torch.optim.Optimizer,
                grad_clip: float = 5.0) -> Tensor:
    w_optimizer.zero_grad()
    loss = model.loss(*train)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    w_optimizer.step()
    return loss.detach()
