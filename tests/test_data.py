"""The data layer on fixture files in the real on-disk formats (no network, download=False)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from data import DataError, build_dataset, default_data_root
from data.common import atomic_torch_save, load_cache
from data.fixtures import (
    FIXTURE_CFG,
    PTB_TRAIN,
    fixture_pixel,
    make_cifar,
    make_imagenet,
    make_mnist,
    make_ptb,
    make_rt,
)
from data.text import clean_str
from data.vision import CIFAR_STATS, holdout_split

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"


def cfg(name: str, **extra) -> dict:
    """The dataset's real YAML config, with the fixture and test overrides."""
    base = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return {**base, **FIXTURE_CFG, **extra}


def collect(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ common
def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BNG_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("BNG_DATA_ROOT")
    assert default_data_root() == Path("~/.cache/bng/data").expanduser()


def test_atomic_cache_round_trip(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    atomic_torch_save({"a": torch.arange(3)}, path)
    assert torch.equal(load_cache(path)["a"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary left behind
    path.write_bytes(b"garbage")
    assert load_cache(path) is None  # a damaged cache is rebuilt, never used


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        build_dataset({"name": "nope"})


def test_every_config_has_the_contract_keys():
    for path in sorted(CONFIGS.glob("*.yaml")):
        c = yaml.safe_load(path.read_text())
        assert c["name"] == path.stem
        assert c["task"] in {"classification", "lm"} and c["input"] in {
            "vector", "image32", "image224", "sentence", "stream"}
        for key in ("in_features", "num_classes", "vocab_size", "limit"):
            assert key in c, (path.name, key)
        assert {"batch_size", "epochs", "weight_decay", "schedule"} <= set(c["train"])


# ------------------------------------------------------------------------------ digits
def test_digits_offline_shapes_and_determinism():
    ds = build_dataset(cfg("digits"), device="cpu", seed=3)
    assert (ds.num_train, ds.num_test, ds.vocab_size) == (1437, 360, None)
    x, y = next(ds.train_batches(0, 100))
    assert x.shape == (100, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
    test_y = torch.cat([y for _, y in ds.test_batches(100)])
    assert len(test_y) == 360 and torch.bincount(test_y).min() >= 35  # stratified: ~36 per class
    assert ds.num_train_batches(100) == 15
    assert same_batches(collect(ds.train_batches(1, 100)), collect(ds.train_batches(1, 100)))
    assert not torch.equal(next(ds.train_batches(1, 100))[1], next(ds.train_batches(2, 100))[1])


def test_epoch_randomness_ignores_global_rng():
    ds = build_dataset(cfg("digits"), seed=0)
    torch.manual_seed(1)
    a = collect(ds.train_batches(0, 64))
    torch.manual_seed(2)
    torch.rand(10)
    assert same_batches(a, collect(ds.train_batches(0, 64)))


def test_digits_limit_caps_both_splits():
    ds = build_dataset(cfg("digits", limit=200), seed=0)
    assert ds.num_train == 200 and ds.num_test == 200
    again = build_dataset(cfg("digits", limit=200), seed=5)
    assert torch.equal(ds.x_train, again.x_train)  # the subset does not depend on the run seed


# ------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files(tmp_path, gz):
    make_mnist(tmp_path, n_train=60, n_test=20, gz=gz)
    ds = build_dataset(cfg("mnist"), root=tmp_path, seed=0)
    assert (ds.num_train, ds.num_test) == (60, 20)
    x, y = next(ds.test_batches(8))
    assert x.shape == (8, 784) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.tolist() == list(range(8))
    assert torch.allclose(x[3] * 255, torch.from_numpy(fixture_pixel(3, 784)).float())
    labels = torch.cat([y for _, y in ds.train_batches(0, 16)])
    assert sorted(labels.tolist()) == sorted(i % 10 for i in range(60))


def test_mnist_missing_names_files_folder_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        build_dataset(cfg("mnist"), root=tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "download=true" in message and "http" in message


def test_mnist_truncated_gz(tmp_path):
    folder = make_mnist(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="truncated"):
        build_dataset(cfg("mnist"), root=tmp_path)


def test_mnist_short_idx_payload(tmp_path):
    folder = make_mnist(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(DataError, match="not a whole IDX"):
        build_dataset(cfg("mnist"), root=tmp_path)


def test_mnist_md5_mismatch(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match="md5"):
        build_dataset(cfg("mnist", verify_md5=True), root=tmp_path)


# ------------------------------------------------------------------------------- CIFAR
def cifar_padded_reference(ds_name: str, folder_images: torch.Tensor) -> torch.Tensor:
    """The fb.resnet.torch recipe written plainly: normalize, then zero-pad 4."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) / 255 for v in CIFAR_STATS[ds_name])
    return F.pad((folder_images.float() / 255 - mean) / std, (4, 4, 4, 4))


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_shapes_labels_and_test_normalization(tmp_path, which):
    make_cifar(tmp_path, which, n_train=100, n_test=20)
    ds = build_dataset(cfg(which), root=tmp_path, seed=0)
    assert (ds.num_train, ds.num_test) == (100, 20)
    x, y = next(ds.train_batches(0, 32))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.max() < (10 if which == "cifar10" else 100)
    xt, _ = next(ds.test_batches(20))
    raw = torch.stack([ds_raw_image(10_000 + i) for i in range(20)])
    torch.testing.assert_close(xt, cifar_padded_reference(which, raw)[:, :, 4:36, 4:36], rtol=0, atol=1e-5)


def ds_raw_image(i: int) -> torch.Tensor:
    return torch.from_numpy(fixture_pixel(i, 3072)).view(3, 32, 32)


def test_cifar_crops_are_true_windows_and_flips_half(tmp_path):
    n = 50
    make_cifar(tmp_path, n_train=n)
    ds = build_dataset(cfg("cifar10"), root=tmp_path, seed=0)
    padded = cifar_padded_reference("cifar10", torch.stack([ds_raw_image(i) for i in range(n)]))
    windows = padded.unfold(2, 32, 1).unfold(3, 32, 1).permute(0, 2, 3, 1, 4, 5)  # (n, 9, 9, 3, 32, 32)
    windows = torch.cat([windows.reshape(n, 81, 3, 32, 32), windows.reshape(n, 81, 3, 32, 32).flip(4)], 1)
    flips, offsets, seen = 0, set(), 0
    for epoch in range(4):
        for x, y in ds.train_batches(epoch, 32):
            for image, label in zip(x, y, strict=True):
                candidates = torch.arange(label, n, 10)  # fixture labels cycle 0..9
                error = (windows[candidates] - image).abs().flatten(2).amax(2)  # (5, 162)
                assert error.min() < 1e-5, "a training image is not a 32x32 window of its padded image"
                match = int(error.min(0).values.argmin())
                flips += match >= 81
                offsets.add(match % 81)
                seen += 1
    assert seen == 4 * n and 0.3 < flips / seen < 0.7  # p = 0.5, 200 draws: 5.6 sigma
    assert len(offsets) > 60  # most of the 81 offsets occur


def test_cifar_resume_start_equals_uninterrupted(tmp_path):
    make_cifar(tmp_path, n_train=100)
    ds = build_dataset(cfg("cifar10"), root=tmp_path, seed=7)
    full = collect(ds.train_batches(3, 16))
    assert len(full) == ds.num_train_batches(16) == 7 and len(full[-1][1]) == 4
    assert same_batches(full[4:], collect(ds.train_batches(3, 16, start=4)))
    assert same_batches(full, collect(build_dataset(cfg("cifar10"), root=tmp_path, seed=7).train_batches(3, 16)))
    other_seed = build_dataset(cfg("cifar10"), root=tmp_path, seed=8)
    assert not torch.equal(full[0][0], next(other_seed.train_batches(3, 16))[0])


def test_ddp_shards_are_disjoint(tmp_path):
    make_mnist(tmp_path, n_train=101)
    make_cifar(tmp_path, n_train=101)
    for name in ("mnist", "cifar10"):
        ranks = [build_dataset(cfg(name), root=tmp_path, seed=1, rank=r, world_size=2) for r in (0, 1)]
        assert ranks[0].num_train == ranks[1].num_train == 50
        orders = [set(ds.epoch_plan(0, 8)[0].tolist()) for ds in ranks]
        assert len(orders[0]) == len(orders[1]) == 50 and not orders[0] & orders[1]
    mnist = [build_dataset(cfg("mnist"), root=tmp_path, seed=1, rank=r, world_size=2) for r in (0, 1)]
    images = [{tuple(row.tolist()) for x, _ in ds.train_batches(0, 8) for row in x} for ds in mnist]
    assert len(images[0]) == len(images[1]) == 50 and not images[0] & images[1]


def test_cifar_holdout(tmp_path):
    """The paper's tuning split: fixed held-out training images replace the test split."""
    make_cifar(tmp_path, n_train=100, n_test=20)
    ds = build_dataset(cfg("cifar10", holdout=30), root=tmp_path, seed=0)
    assert (ds.num_train, ds.num_test) == (70, 30)
    x, y = torch.arange(100).view(100, 1), torch.arange(100)
    x_train, y_train, x_held, y_held = holdout_split(x, y, 30, "cifar10")
    assert len(set(y_held.tolist())) == 30 and not set(y_held.tolist()) & set(y_train.tolist())
    assert sorted(y_train.tolist() + y_held.tolist()) == list(range(100))
    assert y_held.tolist() == sorted(y_held.tolist()) and (x_held[:, 0] == y_held).all()
    assert holdout_split(x, y, 30, "cifar10")[3].tolist() == y_held.tolist()  # every run, every seed
    assert not torch.equal(y_held, torch.arange(70, 100))                   # not just the tail
    for bad in (100, 0.5, True, -3):
        with pytest.raises(DataError, match="dataset.holdout"):
            build_dataset(cfg("cifar10", holdout=bad), root=tmp_path, seed=0)


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError) as err:
        build_dataset(cfg("cifar10"), root=tmp_path)
    assert "data_batch_1" in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)
    folder = make_cifar(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        build_dataset(cfg("cifar10"), root=tmp_path)
    with pytest.raises(DataError, match="md5"):
        build_dataset(cfg("cifar10", verify_md5=True), root=tmp_path)


# --------------------------------------------------------------------------------- PTB
def ptb_stream() -> list[str]:
    return [w for line in PTB_TRAIN for w in line.split() + ["<eos>"]]


def test_ptb_windows_are_next_tokens_with_eos_at_line_ends(tmp_path):
    make_ptb(tmp_path)
    ds = build_dataset(cfg("ptb", bptt=5), root=tmp_path, seed=0)
    assert ds.vocab_size == len(set(ptb_stream())) and ds.vocab[0] == "<eos>"
    batches = collect(ds.train_batches(0, 2))
    assert len(batches) == ds.num_train_batches(2)
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == 2 and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
    rows = torch.cat([x for x, _ in batches], 1)
    targets = torch.cat([y for _, y in batches], 1)
    stream, half = ptb_stream(), len(ptb_stream()) // 2
    assert [ds.vocab[i] for i in rows[0]] == stream[: half - 1]  # row 0: the first half, in order
    assert [ds.vocab[i] for i in targets[1]] == stream[half + 1 : 2 * half]
    assert batches[0][0].shape[1] == 5 and batches[-1][0].shape[1] <= 5
    assert [ds.vocab[i] for i in rows[0][:7]] == "the cat sat on the mat <eos>".split()


def test_ptb_resume_ddp_and_limit(tmp_path):
    make_ptb(tmp_path)
    ds = build_dataset(cfg("ptb", bptt=4), root=tmp_path, seed=0)
    full = collect(ds.train_batches(0, 3))
    assert same_batches(full[5:], collect(ds.train_batches(1, 3, start=5)))
    ranks = [build_dataset(cfg("ptb", bptt=4), root=tmp_path, seed=0, rank=r, world_size=2) for r in (0, 1)]
    grid = ds.train[: 4 * (len(ds.train) // 4)].view(4, -1)  # 2 ranks x 2 columns
    for r, rank_ds in enumerate(ranks):
        x = torch.cat([x for x, _ in rank_ds.train_batches(0, 2)], 1)
        assert torch.equal(x, grid[2 * r : 2 * r + 2, : x.shape[1]])
    small = build_dataset(cfg("ptb", limit=50), root=tmp_path, seed=0)
    assert len(small.train) == 50 and len(small.test) <= 50


def test_ptb_missing_corrupt_and_cache(tmp_path):
    with pytest.raises(DataError) as err:
        build_dataset(cfg("ptb"), root=tmp_path)
    assert "ptb.train.txt" in str(err.value) and str(tmp_path / "ptb") in str(err.value)
    folder = make_ptb(tmp_path)
    with pytest.raises(DataError, match="md5"):
        build_dataset(cfg("ptb", verify_md5=True), root=tmp_path)
    build_dataset(cfg("ptb"), root=tmp_path)
    assert len(list((tmp_path / "cache").glob("ptb-*.pt"))) == 1
    make_ptb(tmp_path, train=PTB_TRAIN + ["a brand new line"])
    ds = build_dataset(cfg("ptb"), root=tmp_path)
    assert "brand" in ds.vocab and len(list((tmp_path / "cache").glob("ptb-*.pt"))) == 2
    assert folder.is_dir()


# ---------------------------------------------------------------------------------- RT
@pytest.mark.parametrize("raw, cleaned", [
    ("the rock is destined to be the 21st century's new \" conan \"",
     "the rock is destined to be the 21st century 's new conan"),
    ("simplistic , silly and tedious . no -- it's a fine , funny film !",
     "simplistic , silly and tedious no it 's a fine , funny film !"),
    ("a caf\u00e9 of (good) ideas , isn't it ?", "a caf of ( good ) ideas , is n't it ?"),
    ("We've done it, they'll say; you'd've...", "we 've done it , they 'll say you 'd 've"),
])
def test_clean_str_known_examples(raw, cleaned):
    assert clean_str(raw) == cleaned


def test_rt_split_vocab_padding(tmp_path):
    folder = tmp_path / "rt-polaritydata"
    folder.mkdir()
    for name, label in (("rt-polarity.pos", "good"), ("rt-polarity.neg", "bad")):
        lines = [f"a {label} movie , word{label}{i} \xe9t\xe9 !" for i in range(50)]
        (folder / name).write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    ds = build_dataset(cfg("rt"), root=tmp_path, seed=0)
    assert (ds.num_train, ds.num_test) == (90, 10)  # the fixed 90/10 split
    x, y = next(ds.test_batches(10))
    assert x.shape == (10, 7) and x.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    assert (x[:, 4] == 1).all()  # each validation sentence's own word never made the vocabulary
    train_x = torch.cat([x for x, _ in ds.train_batches(0, 32)])
    assert (train_x > 1).all()  # training words are all in the vocabulary ("\xe9t\xe9" is "t")
    words = [[ds.vocab[i] for i in row] for row in train_x.tolist()]
    assert all(w[:3] == ["a", w[1], "movie"] and w[-1] == "!" for w in words)
    assert next(ds.train_batches(0, 4))[0].shape[1] >= 5  # at least the widest filter


def test_rt_fixture_resume_limit_and_missing(tmp_path):
    with pytest.raises(DataError) as err:
        build_dataset(cfg("rt"), root=tmp_path)
    assert "rt-polarity.pos" in str(err.value) and "rt-polaritydata.tar.gz" in str(err.value)
    make_rt(tmp_path, repeat=25)
    ds = build_dataset(cfg("rt"), root=tmp_path, seed=2)
    assert (ds.num_train, ds.num_test) == (180, 20)
    full = collect(ds.train_batches(4, 50))
    assert [len(y) for _, y in full] == [50, 50, 50, 30]
    assert same_batches(full[2:], collect(ds.train_batches(4, 50, start=2)))
    pad_rows = [x for x, _ in full][0]
    assert (pad_rows[:, -1] == 0).any()  # shorter sentences are padded with id 0
    assert build_dataset(cfg("rt", limit=40), root=tmp_path, seed=2).num_train == 40
    with pytest.raises(DataError, match="md5"):
        build_dataset(cfg("rt", verify_md5=True), root=tmp_path)


# ---------------------------------------------------------------------------- ImageNet
def test_imagenet_folder_shapes_order_and_shards(tmp_path):
    with pytest.raises(DataError) as err:
        build_dataset(cfg("imagenet"), root=tmp_path)
    assert "train/<wnid>/*.JPEG" in str(err.value) and str(tmp_path / "imagenet") in str(err.value)
    make_imagenet(tmp_path, classes=3, per_class=4, fmt="JPEG")
    ds = build_dataset(cfg("imagenet", workers=0), root=tmp_path, seed=0)
    assert (ds.num_train, ds.num_test, ds.num_train_batches(5)) == (12, 12, 3)
    x, y = next(ds.train_batches(0, 5))
    assert x.shape == (5, 3, 224, 224) and x.dtype == torch.float32 and y.max() <= 2
    xt, yt = next(ds.test_batches(12))
    assert xt.shape == (12, 3, 224, 224) and yt.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    labels = [torch.cat([y for _, y in ds.train_batches(e, 5)]) for e in (0, 0, 1)]
    assert torch.equal(labels[0], labels[1]) and sorted(labels[0].tolist()) == sorted(yt.tolist())
    assert torch.equal(labels[0][5:], torch.cat([y for _, y in ds.train_batches(0, 5, start=1)]))
    shards = [build_dataset(cfg("imagenet", workers=0), root=tmp_path, seed=0, rank=r, world_size=2)
              for r in (0, 1)]
    assert [s.num_train for s in shards] == [6, 6]
    make_imagenet(tmp_path / "png", classes=2, per_class=2, fmt="PNG")
    assert build_dataset(cfg("imagenet", workers=0), root=tmp_path / "png").num_train == 4
