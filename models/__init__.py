"""The networks of Yu et al., "Block-normalized gradient method: an empirical study for training
deep neural network" (arXiv 1707.04822). Each factory is what ``configs/model/<name>.yaml``
instantiates; see docs/DESIGN.md for the forward contracts."""

from models.kim_cnn import KimCNN, kim_cnn
from models.lstm_lm import LSTMLM, lstm_lm
from models.mlp import MLP, mlp
from models.preact_resnet import PreActResNet, preact_resnet34
from models.resnet_cifar import (
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)

__all__ = [
    "MLP",
    "CifarResNet",
    "KimCNN",
    "LSTMLM",
    "PreActResNet",
    "kim_cnn",
    "lstm_lm",
    "mlp",
    "preact_resnet34",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]
