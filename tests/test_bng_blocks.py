"""Block partitions: the paper's layer blocks and the other specs."""

import pytest
import torch
from torch import nn

import bng
from bng.blocks import conv_bn_blocks, resolve_blocks
from bng_helpers import SmallCNN, TinyLM, distance, mlp18, train
from models import resnet20


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


def test_conv_bn_joins_each_batchnorm_to_the_conv_before_it() -> None:
    model = SmallCNN()
    blocks = resolve_blocks(model, "conv_bn")
    assert list(blocks) == ["conv1", "conv2", "fc"]
    assert blocks["conv1"] == [model.conv1.weight, model.bn1.weight, model.bn1.bias]
    assert blocks["conv2"] == [model.conv2.weight, model.bn2.weight, model.bn2.bias]
    assert conv_bn_blocks(model) == blocks


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_conv_bn_on_a_cifar_resnet(shortcut: str) -> None:
    net = resnet20(shortcut=shortcut)
    blocks = resolve_blocks(net, "conv_bn")
    convs = {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(blocks) == convs | {"fc"}  # 19 convs (+2 projections with B) and fc
    modules = dict(net.named_modules())
    for name, params in blocks.items():
        if name == "fc":
            continue
        bn = [m for m in modules.values() if isinstance(m, nn.BatchNorm2d)
              and m.weight is params[1]]
        assert len(params) == 3 and params[0] is modules[name].weight and len(bn) == 1
        assert bn[0].bias is params[2] and bn[0].num_features == modules[name].out_channels
    layer = resolve_blocks(net, "layer")
    assert len(layer) == 2 * len(convs) + 1
    assert sum(map(len, blocks.values())) == sum(map(len, layer.values()))


def test_conv_bn_plain_sgd_moves_each_merged_block_by_lr() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    opt = bng.SGDMNG(model, lr=0.03, momentum=0.0, blocks="conv_bn")
    blocks = resolve_blocks(model, "conv_bn")
    before = {n: [p.detach().clone() for p in ps] for n, ps in blocks.items()}
    train(model, opt, 1)
    assert opt.block_normalizer.plan.names == list(blocks)
    for name, params in blocks.items():
        assert distance(params, before[name]) == pytest.approx(0.03, abs=1e-6), name


def test_a_batchnorm_first_stays_its_own_block() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2), nn.BatchNorm1d(2))
    blocks = resolve_blocks(model, "conv_bn")
    assert list(blocks) == ["0", "1"] and len(blocks["1"]) == 4


def _compose_adagradbng(model: nn.Module) -> torch.optim.Optimizer:
    return bng.AdaGradBNG(model)


@pytest.mark.parametrize("make", [bng.AdamNG, bng.SGDMNG, bng.AdaGradNG, _compose_adagradbng],
                         ids=["adamng", "sgdmng", "adagradng", "adagradbng"])
def test_the_optimizer_and_its_blocks_hold_the_same_parameters(make) -> None:
    """Every parameter the optimizer steps is normalized, once: none is left out of the blocks
    (it would take raw gradient steps) and none is in two."""
    model = TinyLM()
    model.lstm.weight_hh_l0.requires_grad_(False)  # frozen: in neither
    opt = make(model)
    stepped = [p for group in opt.param_groups for p in group["params"] if p.requires_grad]
    planned = [p for params in opt.block_normalizer.plan.blocks.values() for p in params]
    assert sorted(map(id, stepped)) == sorted(map(id, planned))
    assert len(set(map(id, planned))) == len(planned) == len(list(model.parameters())) - 1
    assert opt.block_normalizer.plan.names == list(bng.layer_blocks(model))


def test_child_blocks_make_kims_three_widths_one_block() -> None:
    """The paper's CNN is "a single layer": blocks="child" joins its three Conv1d widths."""
    from models import kim_cnn

    model = kim_cnn(vocab_size=50)
    assert list(resolve_blocks(model, "layer")) == ["embedding", "convs.0", "convs.1", "convs.2",
                                                    "fc"]
    child = resolve_blocks(model, "child")
    assert list(child) == ["embedding", "convs", "fc"]
    assert [p.shape for p in child["convs"]] == [p.shape for p in model.convs.parameters()]


def test_child_blocks_through_the_engine(tmp_path) -> None:
    """optim.normalize.blocks=child reaches the optimizer: one norm for the three widths."""
    from conftest import compose_config
    from experiments.optim import build_optimizer
    from models import kim_cnn

    cfg = compose_config(["dataset=rt", "model=kimcnn", "optim=adamng",
                          "optim.normalize.blocks=child"])
    _, plan = build_optimizer(cfg.optim, kim_cnn(vocab_size=50))
    assert plan.names == ["embedding", "convs", "fc"]
