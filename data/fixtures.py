"""Tiny dataset files in the real on-disk formats, for the tests and the GPU check's runs.

Each `make_*(root, ...)` writes under `root` exactly where `data.build_dataset(cfg, root)`
looks, and returns the folder it wrote. Fixture files are not the official ones, so a
dataset config loading them needs `verify_md5: false` (`FIXTURE_CFG`); `digits` needs no
fixture at all. Pixel values are deterministic: image i of a split is recognizable
(`fixture_pixel(i)`), which the tests use to check crops and subsets.

    from data.fixtures import make_cifar, FIXTURE_CFG
    make_cifar(tmp_path)                       # 100 train, 20 test images
    ds = build_dataset({"name": "cifar10", **FIXTURE_CFG}, root=tmp_path)
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np

FIXTURE_CFG = {"verify_md5": False}  # fixtures are not the official files

PTB_TRAIN = [
    "the cat sat on the mat",
    "a dog sat on the log N",
    "the <unk> ran to the mat",
] * 20
PTB_VALID = ["the dog sat", "a cat ran on the log"]
PTB_TEST = ["the mat sat on a dog", "the <unk> log"]

RT_POS = [
    "the rock is destined to be the 21st century's new \" conan \" and that he's going to make "
    "a splash even greater than arnold schwarzenegger , jean-claud van damme or steven segal .",
    "simplistic , silly and tedious . no -- it's a fine , funny film !",
    "effective but too-tepid biopic",
    "a caf\u00e9 of (good) ideas , isn't it ?",
]
RT_NEG = [
    "unfortunately the story and the actors are served with a hack script .",
    "all the more disquieting for its relatively gore-free allusions to the serial murders .",
    "it's so laddish and juvenile , only teenage boys could possibly find it funny .",
    "a sad , superior human comedy played out on the back roads of life .",
]


def fixture_pixel(i: int, size: int) -> np.ndarray:
    """Image i's pixels: a uint8 ramp that starts at a value derived from i, so images differ
    and every 32x32 window of a padded image is distinct."""
    return ((np.arange(size, dtype=np.int64) * 7 + i * 13) % 251).astype(np.uint8)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist(root: str | Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> Path:
    """MNIST IDX files under root/MNIST/raw (torchvision's layout), gzipped unless gz=False.
    Labels cycle 0..9."""
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.stack([fixture_pixel(i, 784).reshape(28, 28) for i in range(n)])
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def make_cifar(root: str | Path, which: str = "cifar10", n_train: int = 100,
               n_test: int = 20) -> Path:
    """CIFAR python pickles (cifar-10-batches-py/data_batch_1..5 + test_batch, or
    cifar-100-python/train + test). Image i has fixture_pixel(i) as its 3072 bytes."""
    classes = 10 if which == "cifar10" else 100
    label_key = "labels" if which == "cifar10" else "fine_labels"

    def batch(start: int, n: int) -> dict:
        data = np.stack([fixture_pixel(i, 3072) for i in range(start, start + n)])
        return {"data": data.reshape(n, 3072), label_key: [i % classes for i in range(start, start + n)]}

    if which == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        per = -(-n_train // 5)
        parts = {f"data_batch_{k + 1}": batch(k * per, max(0, min(per, n_train - k * per)))
                 for k in range(5)}
    else:
        folder = Path(root) / "cifar-100-python"
        parts = {"train": batch(0, n_train)}
    parts["test_batch" if which == "cifar10" else "test"] = batch(10_000, n_test)
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in parts.items():
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return folder


def make_ptb(root: str | Path, train: list[str] | None = None) -> Path:
    """ptb.{train,valid,test}.txt under root/ptb, Mikolov's format: one sentence per line,
    a leading space, words separated by spaces."""
    folder = Path(root) / "ptb"
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", train or PTB_TRAIN), ("valid", PTB_VALID), ("test", PTB_TEST)):
        (folder / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines))
    return folder


def make_rt(root: str | Path, repeat: int = 25) -> Path:
    """rt-polarity.pos/.neg under root/rt-polaritydata, Latin-1 encoded, each fixture sentence
    repeated `repeat` times with its copy number appended (8 * repeat sentences in all)."""
    folder = Path(root) / "rt-polaritydata"
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("rt-polarity.pos", RT_POS), ("rt-polarity.neg", RT_NEG)):
        text = "".join(f"{line} {k}\n" for k in range(repeat) for line in lines)
        (folder / name).write_bytes(text.encode("latin-1"))
    return folder


def make_imagenet(root: str | Path, classes: int = 3, per_class: int = 4, size: int = 40,
                  fmt: str = "JPEG") -> Path:
    """An ImageFolder under root/imagenet: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
    (fmt="PNG" for lossless files), `per_class` images of size x size per class and split."""
    from PIL import Image

    folder = Path(root) / "imagenet"
    for split in ("train", "val"):
        for c in range(classes):
            wnid = f"n{c:08d}"
            (folder / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = fixture_pixel(c * 100 + i, size * size * 3).reshape(size, size, 3)
                suffix = "JPEG" if fmt == "JPEG" else "png"
                Image.fromarray(pixels).save(folder / split / wnid / f"{wnid}_{i}.{suffix}",
                                             format="JPEG" if fmt == "JPEG" else "PNG")
    return folder


def make_rt_archive(root: str | Path) -> Path:
    """rt-polaritydata.tar.gz as Cornell ships it (for download-path tests)."""
    folder = make_rt(Path(root) / "src")
    archive = Path(root) / "rt-polaritydata.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="rt-polaritydata")
    return archive
