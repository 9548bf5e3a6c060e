"""Block partitions: the paper's layer blocks and the other specs."""

import pytest
import torch
from torch import nn

import bng
from bng.blocks import resolve_blocks
from bng_helpers import TinyLM, mlp18


def test_mlp18_has_17_blocks_of_weight_and_bias() -> None:
    blocks = bng.layer_blocks(mlp18())
    assert len(blocks) == 17
    assert all(len(ps) == 2 for ps in blocks.values())
    assert list(blocks)[:2] == ["0", "2"]  # module names, in model order


def _cifar_resnet_stem() -> nn.Module:
    class Basic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)

    net = nn.Module()
    net.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    net.bn = nn.BatchNorm2d(16)
    net.layer1 = nn.Sequential(Basic(), Basic())
    net.fc = nn.Linear(16, 10)
    return net


def test_cifar_resnet_conv_and_bn_are_separate_blocks() -> None:
    blocks = bng.layer_blocks(_cifar_resnet_stem())
    assert list(blocks) == [
        "conv", "bn", "layer1.0.conv1", "layer1.0.bn1", "layer1.1.conv1", "layer1.1.bn1", "fc"
    ]
    assert len(blocks["conv"]) == 1 and len(blocks["bn"]) == 2 and len(blocks["fc"]) == 2


def test_lstm_language_model_has_4_blocks() -> None:
    model = TinyLM()
    blocks = bng.layer_blocks(model)
    assert list(blocks) == ["embedding", "lstm_l0", "lstm_l1", "decoder"]
    assert [len(v) for v in blocks.values()] == [1, 4, 4, 2]
    assert blocks["lstm_l1"][0] is model.lstm.weight_ih_l1


def test_bidirectional_rnn_splits_directions() -> None:
    blocks = bng.layer_blocks(nn.GRU(3, 4, num_layers=2, bidirectional=True))
    assert list(blocks) == ["root_l0", "root_l0_reverse", "root_l1", "root_l1_reverse"]


def test_frozen_and_tied_parameters() -> None:
    model = TinyLM(hidden=6)
    model.decoder.weight = model.embedding.weight  # tied: belongs to the first owner
    model.lstm.weight_hh_l0.requires_grad_(False)
    blocks = bng.layer_blocks(model)
    assert blocks["decoder"] == [model.decoder.bias]
    assert all(p is not model.lstm.weight_hh_l0 for p in blocks["lstm_l0"])
    assert len(blocks["lstm_l0"]) == 3


def test_param_global_and_dict_specs() -> None:
    model = mlp18()
    assert len(resolve_blocks(model, "param")) == 34
    assert [len(v) for v in resolve_blocks(model, "global").values()] == [34]
    explicit = {"first": [model[0].weight], "rest": list(model[2:].parameters())}
    assert list(resolve_blocks(model, explicit)) == ["first", "rest"]


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="empty"):
        bng.AdamNG(nn.ReLU())
    with pytest.raises(ValueError, match="empty|no parameters"):
        bng.SGDMNG([], lr=0.1, blocks="global")
    with pytest.raises(ValueError, match="blocks must be"):
        bng.AdamNG(mlp18(), blocks="layers")
    model = mlp18()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="belong to no block"):
        bng.block_normalize(optimizer, model, blocks={"one": [model[0].weight]})
    with pytest.raises(ValueError, match="mode"):
        bng.AdamNG(model, mode="unit")
