"""Device-resident image datasets: digits, MNIST, CIFAR-10/100.

Each split is loaded once as one tensor on the training device. An epoch is a permutation
of the (rank's shard of the) training split; CIFAR batches are augmented with batched tensor
ops (pad 4 after normalization, random 32x32 crop, flip with p=0.5), as in airbench and
hlb-CIFAR10: no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from data.common import (
    SUBSET_SEED,
    DataError,
    batch_slices,
    cfg_get,
    check_md5,
    content_fingerprint,
    download_into,
    epoch_generator,
    md5_bytes,
    num_batches,
    require_files,
    shard_permutation,
    subset_indices,
)

PAD = 4  # fb.resnet.torch CIFAR augmentation: zero-pad 4 pixels, then crop 32x32
CROP_OFFSETS = 2 * PAD + 1  # 9 offsets per axis
GROUPS = 2 * CROP_OFFSETS * CROP_OFFSETS  # (flip, dy, dx) combinations: 162

Batch = tuple[torch.Tensor, torch.Tensor]


def pad_store(images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
              chunk: int = 4096) -> torch.Tensor:
    """The training split as model inputs with the zero border already in place:
    (N, C, H, W) uint8 -> (N, C, H+8, W+8) float, normalized, then zero-padded (zero is the
    channel mean, as fb.resnet.torch pads after normalization). Built once, chunk by chunk."""
    n, c, h, w = images.shape
    store = torch.zeros(n, c, h + 2 * PAD, w + 2 * PAD, device=images.device)
    for lo in range(0, n, chunk):
        store[lo : lo + chunk, :, PAD : PAD + h, PAD : PAD + w] = prepare(images[lo : lo + chunk])
    return store


def crop_flip(store: torch.Tensor, index: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """One augmented batch: random 32x32 crops of padded images, flipped with p = 0.5.

    store: (N, C, H+8, W+8) from pad_store. index: (B,) rows of store, sorted by group
    g = flip * 81 + dy * 9 + dx; counts[g] says how many consecutive rows share group g. Each
    group is one index_select of a fixed window straight into its slice of the output (about
    80 ops per batch, each a plain strided copy); a flipped group also reverses its columns.
    Returns (B, C, H, W).
    """
    n, c, h, w = len(index), store.shape[1], store.shape[2] - 2 * PAD, store.shape[3] - 2 * PAD
    out = store.new_empty(n, c, h, w)
    mirror = torch.arange(w - 1, -1, -1, device=store.device)  # column order of a flip
    pos = 0
    for group, count in enumerate(counts):
        if count:
            y, x = _GROUP_DY[group], _GROUP_DX[group]
            rows, target = index[pos : pos + count], out[pos : pos + count]
            window = store[:, :, y : y + h, x : x + w]
            if group < GROUPS // 2:
                torch.index_select(window, 0, rows, out=target)
            else:  # small per-group ops stay single-threaded: no OpenMP stalls on busy CPUs
                torch.index_select(window.index_select(0, rows), 3, mirror, out=target)
            pos += count
    return out


_GROUP_DY = [(g % (GROUPS // 2)) // CROP_OFFSETS for g in range(GROUPS)]
_GROUP_DX = [g % CROP_OFFSETS for g in range(GROUPS)]


class DeviceDataset:
    """Both splits as tensors on `device`; the DESIGN.md `data/` contract.

    x_* are stored compact (uint8 where the source is) and turned into model inputs batch by
    batch by `prepare`. With `augment=True` (CIFAR) the training split is instead stored
    prepared and zero-padded (pad_store), and training batches are crop_flip windows of it;
    the samples inside each batch are ordered by their (flip, dy, dx) group.
    """

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        *,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device | str,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
    ):
        self.device = torch.device(device)
        self.x_train, self.y_train = x_train.to(self.device), y_train.long().to(self.device)
        if augment:  # (N, C, H+8, W+8) float: batches are then pure window copies
            self.x_train = pad_store(self.x_train, prepare)
        self.x_test, self.y_test = x_test.to(self.device), y_test.long().to(self.device)
        self.prepare, self.augment = prepare, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.vocab_size = None
        self.num_train = len(self.x_train) // world_size  # this rank's samples per epoch
        self.num_test = len(self.x_test)
        self.content: str | None = None     # fingerprint of the data read (data identity)

    def num_train_batches(self, batch_size: int) -> int:
        return num_batches(self.num_train, batch_size)

    def epoch_plan(self, epoch: int, batch_size: int) -> tuple[torch.Tensor, list[list[int]]]:
        """This rank's sample order for the epoch and, with augmentation, each batch's
        (flip, dy, dx) group counts. All drawn at once from the epoch's private generator, so
        batch b is the same whether the epoch starts at 0 or resumes at b."""
        gen = epoch_generator(self.seed, epoch)
        order = shard_permutation(len(self.x_train), gen, self.rank, self.world_size)
        if not self.augment:
            return order, []
        n = len(order)
        dy = torch.randint(0, CROP_OFFSETS, (n,), generator=gen)
        dx = torch.randint(0, CROP_OFFSETS, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        group = flip.long() * (GROUPS // 2) + dy * CROP_OFFSETS + dx  # (n,)
        key = torch.arange(n) // batch_size * GROUPS + group  # sort inside each batch only
        sorted_key, perm = key.sort(stable=True)
        counts = torch.bincount(sorted_key, minlength=num_batches(n, batch_size) * GROUPS)
        return order[perm], counts.view(-1, GROUPS).tolist()

    def train_batches(self, epoch: int, batch_size: int, start: int = 0) -> Iterator[Batch]:
        order, counts = self.epoch_plan(epoch, batch_size)
        order = order.to(self.device, non_blocking=True)
        for b, rows in enumerate(batch_slices(len(order), batch_size, start), start):
            index = order[rows]
            if self.augment:
                x = crop_flip(self.x_train, index, counts[b])
            else:
                x = self.prepare(self.x_train.index_select(0, index))
            yield x, self.y_train[index]

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole test split in a fixed order on every rank, without augmentation."""
        for rows in batch_slices(len(self.x_test), batch_size):
            yield self.prepare(self.x_test[rows]), self.y_test[rows]


def _limit(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    keep = subset_indices(len(x), limit)
    return x[keep], y[keep]


def _build(cfg, splits, prepare, *, device, seed, rank, world_size, augment=False):
    x_train, y_train, x_test, y_test = splits
    limit = cfg_get(cfg, "limit")
    x_train, y_train = _limit(x_train, y_train, limit)
    x_test, y_test = _limit(x_test, y_test, limit)
    return DeviceDataset(x_train, y_train, x_test, y_test, prepare=prepare, device=device,
                         seed=seed, rank=rank, world_size=world_size, augment=augment)


# ---------------------------------------------------------------------------------- digits
def load_digits(cfg, root, download, device, seed, rank=0, world_size=1) -> DeviceDataset:
    """scikit-learn's bundled 8x8 digits: stratified 80/20 split (1437/360), pixels / 16."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0  # (1797, 64) in [0, 1]
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=SUBSET_SEED
    )
    train, test = torch.as_tensor(train), torch.as_tensor(test)
    dataset = _build(cfg, (x[train], y[train], x[test], y[test]), lambda t: t, device=device,
                     seed=seed, rank=rank, world_size=world_size)
    dataset.content = content_fingerprint([("data", bunch.data.tobytes()),
                                           ("target", bunch.target.tobytes())])
    return dataset


# ----------------------------------------------------------------------------------- MNIST
MNIST_FOLDER = "MNIST/raw"  # torchvision.datasets.MNIST's layout under the data root
MNIST_MD5 = {  # md5 of the uncompressed IDX files (the .gz bytes vary between mirrors)
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_CLASSES = 10
MNIST_FIX = ("Run with download=true (torchvision fetches them from "
             "https://ossci-datasets.s3.amazonaws.com/mnist/), or copy the four "
             "*-idx?-ubyte[.gz] files of http://yann.lecun.com/exdb/mnist/ there.")


def read_idx(folder: Path, name: str, verify_md5: bool, parts: list | None = None) -> torch.Tensor:
    """An IDX file (`name` or `name.gz`) as a uint8 tensor of the shape its header gives; its
    uncompressed bytes are appended to `parts` (for the content fingerprint)."""
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path.name} in {folder} is truncated or not gzip ({err}). "
                        f"Delete it. {MNIST_FIX}") from err
    if verify_md5:
        check_md5(path.name, md5_bytes(raw), MNIST_MD5.get(name), folder, "download it again")
    ndim = raw[3] if len(raw) >= 4 else 0
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = 1
    for d in dims:
        size *= d
    if raw[:3] != b"\x00\x00\x08" or len(raw) != 4 + 4 * ndim + size:
        raise DataError(f"{path.name} in {folder} is not a whole IDX uint8 file (header "
                        f"{raw[:4].hex()}, {len(raw)} bytes). Delete it and download it again.")
    images = name.endswith("images-idx3-ubyte")          # else labels: one byte each, 0-9
    labels_ok = ndim == 1 and max(raw[8:], default=0) < MNIST_CLASSES
    if not (dims[1:] == [28, 28] if images else labels_ok):
        raise DataError(f"{path.name} in {folder} is an IDX file of shape {dims}, not MNIST's "
                        f"(N, 28, 28) images or (N,) labels 0-9. Delete it and download it again.")
    if parts is not None:
        parts.append((name, raw))
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).view(dims)


def load_mnist(cfg, root, download, device, seed, rank=0, world_size=1) -> DeviceDataset:
    """MNIST 60k/10k, raw 28x28 pixels / 255, flattened to 784 (the paper's "raw images")."""
    folder = Path(root) / MNIST_FOLDER
    names = list(MNIST_MD5)
    present = [n for n in names if (folder / n).is_file() or (folder / f"{n}.gz").is_file()]
    if len(present) < len(names) and download:
        for name in names:
            if name not in present:
                _download_mnist(Path(root), folder, f"{name}.gz")
    else:
        missing = [f"{n}.gz" for n in names if n not in present]
        if missing:
            raise DataError(f"mnist: missing {', '.join(missing)} in {folder} (expected the "
                            f"four files {', '.join(names)}, each plain or .gz). {MNIST_FIX}")
    verify, parts = bool(cfg_get(cfg, "verify_md5", True)), []
    x_train, y_train, x_test, y_test = (read_idx(folder, n, verify, parts) for n in names)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(f"MNIST images and labels in {folder} differ in count. {MNIST_FIX}")
    splits = (x_train.flatten(1), y_train, x_test.flatten(1), y_test)  # (N, 784) uint8
    dataset = _build(cfg, splits, lambda t: t.float().div_(255.0), device=device, seed=seed,
                     rank=rank, world_size=world_size)
    dataset.content = content_fingerprint(parts)      # the uncompressed bytes: .gz or not
    return dataset


def _download_mnist(root: Path, folder: Path, filename: str) -> None:
    """One .gz file from torchvision's MNIST mirrors, the first that answers."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    md5 = dict(MNIST.resources)[filename]

    def fetch(tmp: Path) -> Path:
        errors = []
        for mirror in MNIST.mirrors:
            try:
                download_url(f"{mirror}{filename}", str(tmp), filename, md5)
                return tmp
            except Exception as err:   # this mirror failed: the next one, then the first error
                errors.append(err)
        raise errors[0]

    download_into(root, folder, fetch, filename, f"{MNIST.mirrors[0]}{filename}",
                  f"{filename} of http://yann.lecun.com/exdb/mnist/ in {folder}")


# ------------------------------------------------------------------------------- CIFAR-10/100
CIFAR_STATS = {  # per-channel mean and std of the training set in [0, 1], from fb.resnet.torch
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
}


def _cifar_spec(name: str):
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    return cls, label_key


def _read_cifar_pickle(path: Path, raw: bytes, md5: str | None, label_key: str, fix: str):
    if md5 is not None:
        check_md5(path.name, md5_bytes(raw), md5, path.parent, "download it again")
    try:
        entry = pickle.loads(raw, encoding="latin1")
        x = torch.as_tensor(entry["data"], dtype=torch.uint8).view(-1, 3, 32, 32)
        y = torch.as_tensor(entry[label_key], dtype=torch.long)
    except Exception as err:  # truncated pickle, wrong keys or shapes
        raise DataError(f"{path.name} in {path.parent} is truncated or not a CIFAR python "
                        f"pickle ({type(err).__name__}: {err}). Delete it and {fix}") from err
    if len(x) != len(y):
        raise DataError(f"{path.name} in {path.parent}: {len(x)} images, {len(y)} labels. {fix}")
    return x, y


def holdout_split(x: torch.Tensor, y: torch.Tensor, holdout, name: str):
    """(x_train, y_train, x_held, y_held): `holdout` training images set aside, the same ones for
    every run seed (a permutation seeded with SUBSET_SEED), each part in its original order."""
    if isinstance(holdout, bool) or not isinstance(holdout, int) or not 0 < holdout < len(x):
        raise DataError(f"dataset.holdout={holdout!r}: must be a whole number of training images "
                        f"between 1 and {len(x) - 1} ({name} has {len(x)}); the paper's is 5000.")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))
    keep, held = perm[:-holdout].sort().values, perm[-holdout:].sort().values
    return x[keep], y[keep], x[held], y[held]


def load_cifar(cfg, root, download, device, seed, rank=0, world_size=1) -> DeviceDataset:
    """CIFAR-10/100 50k/10k (45k/5k with `holdout: 5000`), normalized per channel; training
    batches get the fb.resnet.torch crop and flip."""
    name = cfg_get(cfg, "name", "cifar10")
    cls, label_key = _cifar_spec(name)
    folder = Path(root) / cls.base_folder
    files = cls.train_list + cls.test_list
    fix = (f"run with download=true (torchvision fetches {cls.url}, md5 {cls.tgz_md5}), or "
           f"extract that archive into {root} yourself.")
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing and download:
        def fetch(tmp: Path) -> Path:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(cls.url, str(tmp), filename=cls.filename, md5=cls.tgz_md5)
            return tmp / cls.base_folder

        download_into(Path(root), folder, fetch, cls.filename, cls.url,
                      f"extract {cls.filename} into {root} (its files in {folder})")
    elif missing:
        require_files(folder, [f for f, _ in files], name, fix[0].upper() + fix[1:])
    verify = bool(cfg_get(cfg, "verify_md5", True))
    raws = [(f, (folder / f).read_bytes()) for f, _ in files]
    parts = [_read_cifar_pickle(folder / f, raw, md5 if verify else None, label_key, fix)
             for (f, md5), (_, raw) in zip(files, raws, strict=True)]
    train_parts = parts[: len(cls.train_list)]
    x_train = torch.cat([x for x, _ in train_parts])
    y_train = torch.cat([y for _, y in train_parts])
    x_test, y_test = parts[-1]
    holdout = cfg_get(cfg, "holdout", None)
    if holdout:  # the paper's tuning split: a fixed 5,000 training images become the test split
        x_train, y_train, x_test, y_test = holdout_split(x_train, y_train, holdout, name)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) / 255.0 for v in CIFAR_STATS[name])
    scale, shift = 1.0 / (255.0 * std), -mean / std

    def normalize(t: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) uint8 -> float
        return torch.addcmul(shift, t.float(), scale)

    dataset = _build(cfg, (x_train, y_train, x_test, y_test), normalize, device=device,
                     seed=seed, rank=rank, world_size=world_size, augment=True)
    dataset.content = content_fingerprint(raws)
    return dataset
