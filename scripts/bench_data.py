"""One CIFAR-shaped training epoch through our device-resident pipeline and through a
torchvision DataLoader + transforms pipeline, in the same run.

    python scripts/bench_data.py                 # 50,000 images, batch 128, 2 workers
    python scripts/bench_data.py --n 10000       # quicker

Both pipelines do the same work: uint8 images -> normalized float, zero-pad 4, random 32x32
crop, horizontal flip with p=0.5, batches of 128 (torchvision: RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize; DataLoader with shuffle and num_workers=2).
Prints images/s for each and the ratio; with CUDA, also our pipeline on the GPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from data.vision import CIFAR_STATS, DeviceDataset


def device_pipeline(images: np.ndarray, labels: np.ndarray, device: str, batch: int) -> float:
    """Images/s of one epoch of DeviceDataset.train_batches (loading excluded)."""
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) / 255.0 for v in CIFAR_STATS["cifar10"])
    scale, shift = 1.0 / (255.0 * std), -mean / std
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
    y = torch.from_numpy(labels)
    ds = DeviceDataset(x, y, x[:1], y[:1], prepare=lambda t: torch.addcmul(shift, t.float(), scale),
                       device=device, seed=0, augment=True)
    for _ in ds.train_batches(0, batch):  # warm-up epoch (allocator, CUDA context)
        break
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    count = 0
    for xb, _ in ds.train_batches(1, batch):
        count += len(xb)
    sync()
    return count / (time.perf_counter() - start)


class _ArrayDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: a PIL image from the HWC array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_pipeline(images: np.ndarray, labels: np.ndarray, batch: int, workers: int) -> float:
    from torchvision import transforms as T

    mean, std = (tuple(c / 255.0 for c in v) for v in CIFAR_STATS["cifar10"])
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(_ArrayDataset(images, labels, transform), batch_size=batch,
                                         shuffle=True, num_workers=workers)
    start = time.perf_counter()
    count = 0
    for xb, _ in loader:  # includes worker start-up, as every epoch of a real run does
        count += len(xb)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="images in the epoch")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    ours = device_pipeline(images, labels, "cpu", args.batch)
    theirs = torchvision_pipeline(images, labels, args.batch, args.workers)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.n} images, "
          f"batch {args.batch}")
    print(f"device-resident (cpu): {ours:12,.0f} images/s")
    print(f"torchvision DataLoader ({args.workers} workers): {theirs:12,.0f} images/s")
    print(f"ratio: {ours / theirs:.1f}x")
    if torch.cuda.is_available():
        gpu = device_pipeline(images, labels, "cuda", args.batch)
        print(f"device-resident (cuda, {torch.cuda.get_device_name()}): {gpu:12,.0f} images/s, "
              f"{gpu / theirs:.1f}x the torchvision DataLoader")


if __name__ == "__main__":
    main()
