"""Small models and loops shared by the tests of `bng` (built inline: no dependency on models/)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def mlp18(in_features: int = 20, width: int = 16, classes: int = 5) -> nn.Sequential:
    """The paper's MLP-18 shape (17 Linear layers), narrowed for speed."""
    layers: list[nn.Module] = [nn.Linear(in_features, width), nn.ReLU()]
    for _ in range(15):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv -> BN -> ReLU twice, then a linear classifier (CIFAR ResNet's block kinds)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class TinyLM(nn.Module):
    """Embedding, 2-layer LSTM, decoder: the PTB model's structure."""

    def __init__(self, vocab: int = 11, hidden: int = 6) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.decoder(out)


class MixedDtype(nn.Module):
    """float64 and float32 layers, a block spanning both dtypes, a zero bias, a frozen
    tensor and an unused one (grad None)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(5, 4).double()
        self.mixed_weight = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
        self.mixed_bias = nn.Parameter(torch.zeros(4))  # float32, zero-initialized
        self.last = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.randn(3), requires_grad=False)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x.double()) @ self.mixed_weight)
        h = torch.tanh(h.float() + self.mixed_bias)
        return self.last(h) + self.frozen


def batch_for(model: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic (x, y) batch matching the model's input kind."""
    g = torch.Generator().manual_seed(step)
    if isinstance(model, TinyLM):
        x = torch.randint(0, 11, (3, 5), generator=g)
        return x, torch.randint(0, 11, (3, 5), generator=g)
    if isinstance(model, SmallCNN):
        return torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)
    if isinstance(model, MixedDtype):
        return torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)
    return torch.randn(8, 20, generator=g), torch.randint(0, 5, (8,), generator=g)


def loss_of(model: nn.Module, step: int) -> torch.Tensor:
    x, y = batch_for(model, step)
    logits = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    before_step: Callable[[], object] | None = None,
    first_step: int = 0,
    set_to_none: bool = True,
) -> None:
    """Plain loop: zero_grad, backward, optional hook, step."""
    for step in range(first_step, first_step + steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        loss_of(model, step).backward()
        if before_step is not None:
            before_step()
        optimizer.step()


def twin(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def assert_same_params(a: nn.Module, b: nn.Module, exact: bool = False) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if exact:
            assert torch.equal(p, q), name
        else:
            torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6, msg=name)


def distance(params: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    """L2 distance between the current parameters and a saved copy, as one vector."""
    return sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(params, before, strict=True)) ** 0.5
