"""Tests for models/ and configs/model/: structure, parameter counts against He et al.
(2016a, "Deep residual learning", Table 6), forward/backward of every config, bf16 autocast,
channels_last, LSTM state carrying, Kim-CNN padding and max-norm, and bng.layer_blocks counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

import models

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"

# Stand-ins for configs/dataset/*.yaml: the fields the model configs interpolate.
DATASETS = {
    "vector": {"in_features": 64, "num_classes": 10, "vocab_size": None},  # digits
    "image32": {"in_features": 3072, "num_classes": 10, "vocab_size": None},  # cifar10
    "image224": {"in_features": 150528, "num_classes": 1000, "vocab_size": None},  # imagenet
    "stream": {"in_features": None, "num_classes": None, "vocab_size": 50},  # ptb, tiny vocab
    "sentence": {"in_features": None, "num_classes": 2, "vocab_size": 50},  # rt, tiny vocab
}
# The dataset input kinds each config must accept (the engine's compatibility check reads them).
EXPECTED_INPUTS = {
    "mlp6": ["vector"], "mlp12": ["vector"], "mlp18": ["vector"],
    "resnet20": ["image32"], "resnet32": ["image32"], "resnet44": ["image32"],
    "resnet56": ["image32"], "resnet110": ["image32"],
    "preact_resnet34": ["image224"], "lstm": ["stream"], "kimcnn": ["sentence"],
}  # fmt: skip
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}  # He et al. Table 6


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load(name: str) -> DictConfig:
    """configs/model/<name>.yaml with its `defaults:` (`base/mlp@_here_`) merged, as Hydra does."""
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    merged = OmegaConf.create()
    for entry in cfg.pop("defaults", []):
        if entry != "_self_":
            merged = OmegaConf.merge(merged, load(str(entry).partition("@")[0]))
    return OmegaConf.merge(merged, cfg)


def build(name: str) -> tuple[nn.Module, str]:
    """Instantiate configs/model/<name>.yaml against a stand-in dataset of its input kind."""
    cfg = load(name)
    kind = cfg.inputs[0]
    cfg = OmegaConf.merge({"dataset": DATASETS[kind]}, {"model": cfg})
    return instantiate(cfg.model.net), kind


def sample_input(kind: str, batch: int = 2) -> torch.Tensor:
    if kind == "vector":
        return torch.randn(batch, 64)
    if kind == "image32":
        return torch.randn(batch, 3, 32, 32)
    if kind == "image224":
        return torch.randn(batch, 3, 64, 64)  # small resolution keeps the CPU test fast
    return torch.randint(1, 50, (batch, 12))  # token ids, no padding


def logits_of(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # lstm returns (logits, hidden)


# --- configs ---------------------------------------------------------------------------------


def test_every_config_present_with_its_input_kinds() -> None:
    found = {path.stem for path in CONFIG_DIR.glob("*.yaml")}
    assert found == set(EXPECTED_INPUTS)
    for name, inputs in EXPECTED_INPUTS.items():
        cfg = load(name)
        assert cfg.name == name
        assert list(cfg.inputs) == inputs


@pytest.mark.parametrize("name", sorted(EXPECTED_INPUTS))
def test_forward_backward_every_config(name: str) -> None:
    torch.manual_seed(0)
    model, kind = build(name)
    x = sample_input(kind)
    logits = logits_of(model(x))
    expected_classes = DATASETS[kind]["num_classes"] or DATASETS[kind]["vocab_size"]
    expected_shape = (2, 12, expected_classes) if kind == "stream" else (2, expected_classes)
    assert logits.shape == expected_shape
    logits.float().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


# --- MLP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [6, 12, 18])
def test_mlp_depth_and_activations(depth: int) -> None:
    model = models.mlp(depth)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    sigmoids = [m for m in model.modules() if isinstance(m, nn.Sigmoid)]
    assert len(linears) == depth - 1  # depth counts layers of units, input and output included
    assert len(sigmoids) == depth - 2  # between layers, none on the logits
    assert (linears[0].in_features, linears[-1].out_features) == (784, 10)
    assert all(m.out_features == 100 for m in linears[:-1])
    assert isinstance(model.layers[-1], nn.Linear)  # output layer gives logits
    # strictly alternating Linear, Sigmoid, ..., Linear
    kinds = [type(m) for m in model.layers]
    assert kinds == [nn.Linear, nn.Sigmoid] * (depth - 2) + [nn.Linear]


def test_mlp_rejects_depth_below_two() -> None:
    with pytest.raises(ValueError, match="depth"):
        models.mlp(1)


# --- CIFAR ResNets ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_cifar_resnet_params_match_table6(depth: int) -> None:
    model = getattr(models, f"resnet{depth}")()
    assert abs(count(model) - PAPER_PARAMS[depth]) / PAPER_PARAMS[depth] < 0.02
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # depth = weighted layers: convs + the FC


def test_option_a_adds_no_parameters_and_b_adds_projections() -> None:
    a, b = models.resnet20(shortcut="A"), models.resnet20(shortcut="B")
    plain_convs = sum(
        m.weight.numel() for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    plain_bns = sum(2 * m.num_features for m in a.modules() if isinstance(m, nn.BatchNorm2d))
    assert count(a) == plain_convs + plain_bns + a.fc.bias.numel()  # nothing else owns params
    # B: 1x1 projections 16->32 and 32->64, each followed by a BN
    assert count(b) - count(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_a_shortcut_is_strided_zero_padded_identity() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = models.resnet_cifar.ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


def test_cifar_resnet_he_init() -> None:
    torch.manual_seed(0)
    model = models.resnet110()
    conv = model.stage3[0].conv2  # 64 -> 64, 3x3: std = sqrt(2 / (9 * 64))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.05)
    assert torch.all(model.stage1[0].bn1.weight == 1) and torch.all(model.fc.bias == 0)


def test_cifar_resnet_rejects_bad_depth_and_shortcut() -> None:
    with pytest.raises(ValueError, match="6n"):
        models.resnet_cifar.CifarResNet(21)
    with pytest.raises(ValueError, match="shortcut"):
        models.resnet20(shortcut="C")


# --- pre-activation ResNet-34 ----------------------------------------------------------------


def test_preact_resnet34_params_and_structure() -> None:
    model = models.preact_resnet34()
    assert abs(count(model) - 21.8e6) / 21.8e6 < 0.01
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert blocks[0].bn1 is None  # stem ends in BN-ReLU: 'no_preact'
    firsts = [stage[0] for stage in model.stages[1:]]
    assert all(b.preact == "both" and b.projection is not None for b in firsts)
    assert sum(b.projection is not None for b in blocks) == 3  # projections only on shape change


def test_preact_projection_sees_the_preactivated_input() -> None:
    block = models.preact_resnet.PreActBlock(8, 16, stride=2, preact="both").eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        block.conv2.weight.zero_()  # isolate the shortcut branch
        expected = block.projection(torch.relu(block.bn1(x)))
        assert torch.allclose(block(x), expected)


# --- LSTM LM ---------------------------------------------------------------------------------


def test_lstm_init_and_state_carried_across_calls() -> None:
    torch.manual_seed(0)
    model = models.lstm_lm(vocab_size=30).eval()
    assert all(p.abs().max() <= 0.1 for p in model.parameters())  # Zaremba U(-0.1, 0.1)
    assert model.lstm.num_layers == 2 and model.lstm.hidden_size == 200
    h, c = model.init_hidden(3)
    assert h.shape == c.shape == (2, 3, 200) and torch.count_nonzero(h) == 0
    x = torch.randint(0, 30, (3, 8))
    with torch.no_grad():
        whole, _ = model(x)
        first, hidden = model(x[:, :5])
        second, _ = model(x[:, 5:], hidden)
        fresh, _ = model(x[:, 5:])
    assert first.shape == (3, 5, 30)
    # carrying (h, c) across calls equals one long call; starting from zeros does not
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)
    assert not torch.allclose(second, fresh, atol=1e-3)


def test_lstm_dropout_placement() -> None:
    model = models.lstm_lm(vocab_size=30)
    assert model.drop.p == 0.5 and model.lstm.dropout == 0.5  # embedding/decoder + between layers


# --- Kim CNN ---------------------------------------------------------------------------------


def test_kim_cnn_structure() -> None:
    model = models.kim_cnn(vocab_size=50)
    assert [c.kernel_size[0] for c in model.convs] == [3, 4, 5]
    assert all(c.out_channels == 100 and c.in_channels == 128 for c in model.convs)
    assert model.fc.in_features == 300 and model.drop.p == 0.5
    assert torch.count_nonzero(model.embedding.weight[0]) == 0  # padding id 0 embeds to zero


def test_kim_cnn_pads_sentences_shorter_than_widest_window() -> None:
    torch.manual_seed(0)
    model = models.kim_cnn(vocab_size=50).eval()
    short = torch.tensor([[5, 7]])  # shorter than the width-5 window
    padded = torch.tensor([[5, 7, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(model(short), model(padded))  # same as padding in the data


def test_kim_cnn_max_norm_option() -> None:
    model = models.kim_cnn(vocab_size=50)
    assert model.max_norm is None  # the paper's basic version
    with torch.no_grad():
        model.fc.weight.fill_(1.0)  # row norms sqrt(300) > 3
    before = model.fc.weight.clone()
    model.apply_max_norm_()
    assert torch.equal(model.fc.weight, before)  # off by default: a no-op
    model.max_norm = 3.0
    model.apply_max_norm_()
    assert torch.allclose(model.fc.weight.norm(dim=1), torch.full((2,), 3.0), atol=1e-4)
    small = models.kim_cnn(vocab_size=50, max_norm=3.0)
    weight = small.fc.weight.detach().clone()  # default init rows have norm < 3: untouched
    small.apply_max_norm_()
    assert torch.allclose(small.fc.weight, weight)


# --- precision, memory format, compile -------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp6", "resnet20", "preact_resnet34", "lstm", "kimcnn"])
def test_bf16_autocast_on_cpu(name: str) -> None:
    torch.manual_seed(0)
    model, kind = build(name)
    x = sample_input(kind)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = logits_of(model(x))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet34"])
def test_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)
    model, kind = build(name)
    model.eval()
    x = sample_input(kind)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        pooled_inputs = []  # the last feature map, (B, C, H, W) before global pooling
        model.pool.register_forward_hook(lambda module, args, out: pooled_inputs.append(args[0]))
        out = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, reference, atol=1e-4)
    # no layer (e.g. option A's zero padding) silently converts back to NCHW
    assert pooled_inputs[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_torch_compile_resnet20() -> None:
    torch.manual_seed(0)
    model = models.resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4)


# --- bng.layer_blocks ------------------------------------------------------------------------


def _layer_blocks():
    import bng

    return bng.layer_blocks


# model -> the paper's layers: one block per module owning params (conv, BN, Linear, Embedding),
# nn.LSTM split per layer.
BLOCK_COUNTS = {
    "mlp6": 5, "mlp12": 11, "mlp18": 17,
    "resnet20": 39, "resnet32": 63, "resnet44": 87, "resnet56": 111, "resnet110": 219,
    # stem conv+BN 2, 32 block convs, 16 bn2 + 15 bn1 (the first block has no preact),
    # 3 projections, final BN, FC
    "preact_resnet34": 70,
    "lstm": 4,  # embedding, lstm_l0, lstm_l1, decoder
    "kimcnn": 5,  # embedding, 3 convs, fc
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BLOCK_COUNTS))
def test_layer_block_counts(name: str) -> None:
    layer_blocks = _layer_blocks()
    model, _ = build(name)
    blocks = layer_blocks(model)
    assert len(blocks) == BLOCK_COUNTS[name]
    covered = {id(p) for params in blocks.values() for p in params}
    assert covered == {id(p) for p in model.parameters()}  # every parameter in exactly one block
    if name == "lstm":
        assert {"lstm_l0", "lstm_l1"} <= set(blocks)


def test_kim_cnn_embedding_init_bound() -> None:
    """Kim's U(-0.25, 0.25) by default; the TF port's reading draws from U(-1, 1)."""
    torch.manual_seed(0)
    kim = models.kim_cnn(vocab_size=2000).embedding.weight
    torch.manual_seed(0)
    port = models.kim_cnn(vocab_size=2000, emb_init=1.0).embedding.weight
    assert kim.abs().max() <= 0.25 and port.abs().max() > 0.9
    assert port.abs().max() <= 1.0 and port[0].abs().sum() == 0       # padding row stays zero
