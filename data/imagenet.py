"""ImageNet from the user's files, with fb.resnet.torch's preprocessing, through a DataLoader
with worker processes and pinned memory (too large to live on the device)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from data.common import DataError, cfg_get, content_fingerprint, num_batches, subset_indices

IMAGENET_FOLDER = "imagenet"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # fb.resnet.torch / torchvision
# fb.resnet.torch's PCA lighting: eigenvalues and eigenvectors (columns) of the RGB covariance
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
FIX = (f"ImageNet is never downloaded: put the ILSVRC-2012 images there as train/<wnid>/*.JPEG "
       f"and val/<wnid>/*.JPEG (an ImageFolder), or put ILSVRC2012_img_train.tar, "
       f"ILSVRC2012_img_val.tar and {DEVKIT} there for torchvision.datasets.ImageNet to unpack.")


class Lighting:
    """AlexNet-style PCA lighting noise on a (3, H, W) tensor in [0, 1], as fb.resnet.torch:
    add eigvec @ (alpha * eigval) with alpha ~ N(0, alphastd) per image and channel."""

    def __init__(self, alphastd: float = 0.1):  # fb.resnet.torch: 0.1
        self.alphastd = alphastd
        self.eigval, self.eigvec = torch.tensor(EIGVAL), torch.tensor(EIGVEC)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)  # (3,)
        return image + rgb.view(3, 1, 1)


def transforms(train: bool):
    from torchvision import transforms as T

    if train:  # fb.resnet.torch: RandomSizedCrop, ColorJitter 0.4, Lighting 0.1, flip, normalize
        return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                          Lighting(0.1), T.Normalize(MEAN, STD)])
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])


def _open(folder: Path, split: str):
    import torchvision.datasets as tvd

    try:
        if (folder / split).is_dir():
            return tvd.ImageFolder(str(folder / split), transform=transforms(split == "train"))
        if (folder / DEVKIT).is_file():
            return tvd.ImageNet(str(folder), split=split, transform=transforms(split == "train"))
    except (OSError, RuntimeError) as err:  # no images in a class folder, a bad archive
        raise DataError(f"imagenet: cannot read {folder / split} ({err}). {FIX}") from err
    raise DataError(f"imagenet: missing {folder / 'train'} and {folder / 'val'} (or {DEVKIT}) "
                    f"in {folder}. {FIX}")


class FolderDataset:
    """DESIGN.md `data/` contract over two torchvision datasets. Each epoch: a
    DistributedSampler (also for one process) with set_epoch(epoch) and seed `seed`, so each rank
    reads a disjoint shard; `start` skips that many batches of the same order. Workers' random
    augmentation is seeded from (seed, epoch): a run started at batch 0 is reproducible; a
    resumed epoch gets the same images in the same batches, with fresh crops."""

    def __init__(self, train, test, device, seed, rank, world_size, workers):
        self.train, self.test = train, test
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size
        self.workers, self.vocab_size = workers, None
        self.content: str | None = None     # fingerprint of the files listed (data identity)
        self.num_train, self.num_test = len(train) // world_size, len(test)

    def num_train_batches(self, batch_size: int) -> int:
        return num_batches(self.num_train, batch_size)

    def _loader(self, dataset, batch_size: int, sampler, seed: int):
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            generator=torch.Generator().manual_seed(seed))

    def _to_device(self, loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, batch_size: int, start: int = 0):
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(self.train, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        order = list(sampler)[start * batch_size :]
        seed = (self.seed * 1_000_003 + epoch) * 64 + self.rank
        return self._to_device(self._loader(self.train, batch_size, order, seed))

    def test_batches(self, batch_size: int):
        """The whole validation split in a fixed order, on every rank."""
        return self._to_device(self._loader(self.test, batch_size, range(len(self.test)), 0))


def load_imagenet(cfg, root, download, device, seed, rank=0, world_size=1) -> FolderDataset:
    folder = Path(root) / IMAGENET_FOLDER
    train, test = _open(folder, "train"), _open(folder, "val")
    if train.classes != test.classes:
        raise DataError(f"imagenet: the class folders of {folder / 'train'} and {folder / 'val'} "
                        f"differ ({len(train.classes)} vs {len(test.classes)}). {FIX}")
    listing = [f"{Path(path).relative_to(folder)}:{os.path.getsize(path)}"
               for split in (train, test) for path, _ in split.samples]
    content = content_fingerprint([("listing", "\n".join(listing).encode())])
    limit = cfg_get(cfg, "limit")
    if limit is not None:
        train = torch.utils.data.Subset(train, subset_indices(len(train), limit).tolist())
        test = torch.utils.data.Subset(test, subset_indices(len(test), limit).tolist())
    workers = int(cfg_get(cfg, "workers", 8))
    dataset = FolderDataset(train, test, device, seed, rank, world_size, workers)
    # Names and sizes, not bytes: hashing ~150 GB of JPEGs would take longer than an epoch.
    dataset.content = content
    return dataset
