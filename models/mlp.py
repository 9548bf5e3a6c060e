"""Fully connected sigmoid networks MLP-N from Yu et al. (arXiv 1707.04822), section on MNIST.

The paper trains MLP-6, MLP-12 and MLP-18 on MNIST: "the first and last layer respectively
contain 784 and 10 units", every hidden layer has 100 units and the activation is the sigmoid.
Deep sigmoid nets suffer from vanishing gradients, which is exactly the regime where
block-normalized gradients are claimed to help the most.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """Sigmoid multilayer perceptron with ``depth`` layers of units.

    ``depth`` counts the layers of *units*, input and output included, so the network has
    ``depth - 1`` Linear layers (MLP-6: 784 -> 100 -> 100 -> 100 -> 100 -> 10, 5 Linears).

    Init: PyTorch's default ``nn.Linear`` init (Kaiming-uniform with a=sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases). The paper does not state an
    init, and this is the classic LeCun-style fan-in scaling sigmoid nets were trained with.

    Args:
        depth: layers of units, input and output included (>= 2). 6, 12 or 18 in the paper.
        in_features: input units; 784 for MNIST, 64 for sklearn's ``digits``.
        hidden: units per hidden layer; 100 in the paper.
        num_classes: output units (logits, no softmax).
    """

    def __init__(
        self, depth: int, in_features: int = 784, hidden: int = 100, num_classes: int = 10
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(
                f"MLP depth counts input and output layers, so it must be >= 2; got {depth}"
            )
        widths = [in_features] + [hidden] * (depth - 2) + [num_classes]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < depth - 2:  # sigmoid between layers, none after the output logits
                layers.append(nn.Sigmoid())
        self.layers = nn.Sequential(*layers)
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_features) float -> logits (B, num_classes)."""
        return self.layers(x.flatten(1))  # flatten lets (B, 1, 28, 28) images through too


def mlp(depth: int, in_features: int = 784, hidden: int = 100, num_classes: int = 10) -> MLP:
    """MLP-``depth`` of the paper (sigmoid, 100 hidden units); see :class:`MLP`."""
    return MLP(depth, in_features=in_features, hidden=hidden, num_classes=num_classes)
