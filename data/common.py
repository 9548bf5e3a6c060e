"""What every dataset shares: the error type, the data root, md5 checks, the checks that need no
md5, the content fingerprint, downloads that leave nothing half-made, atomic caches, the
per-epoch generator and the DDP shard of an epoch's permutation."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

ENV_DATA_ROOT = "BNG_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/.cache/bng/data"  # outside the source tree, shared by all runs
SUBSET_SEED = 0  # fixed seed of `limit` subsets and holdout splits: the same for every run seed


class DataError(RuntimeError):
    """A dataset's files are missing, corrupt or unreadable. The message names the files, the
    folder it looked in and the fix; the engine prints it as is."""


def default_data_root() -> Path:
    """`$BNG_DATA_ROOT` when set, else `~/.cache/bng/data`."""
    return Path(os.environ.get(ENV_DATA_ROOT) or DEFAULT_DATA_ROOT).expanduser()


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg[key]` for a dict or an omegaconf DictConfig, `default` when absent or null."""
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_md5(name: str, data_md5: str, expected: str | None, folder: Path, fix: str) -> None:
    """Raise DataError when a file's md5 differs from the official one."""
    if expected is not None and data_md5 != expected:
        raise DataError(
            f"{name} in {folder} is corrupt or not the official file: md5 {data_md5}, "
            f"expected {expected}. Delete it and {fix}. (Fixture or custom data: set "
            f"dataset.verify_md5=false.)"
        )


def require_files(folder: Path, names: Sequence[str], dataset: str, fix: str) -> None:
    """One DataError listing every missing file, the folder and the fix."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{dataset}: missing {', '.join(missing)} in {folder} (expected: {', '.join(names)}). "
            f"{fix}"
        )


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: readers never see a
    half-written cache, and concurrent writers (DDP ranks) each publish a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cache(path: Path) -> Any | None:
    """A cache written by atomic_torch_save, or None when absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a cache from another torch version or a damaged disk: rebuild it
        return None


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A private CPU generator for one epoch's randomness (order, crops, flips). Seeded from
    (seed, epoch) only, so it is independent of the global RNG and of the device."""
    mixed = (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def shard_permutation(n: int, gen: torch.Generator, rank: int, world_size: int) -> torch.Tensor:
    """This rank's disjoint share of a random permutation of range(n): every world_size-th
    entry from `rank`, the tail cut so all ranks get the same count (same steps per epoch)."""
    perm = torch.randperm(n, generator=gen)
    per_rank = n // world_size
    return perm[rank : per_rank * world_size : world_size]


def shard_size(n: int, world_size: int) -> int:
    return n // world_size


def num_batches(n: int, batch_size: int) -> int:
    """Batches in an epoch of n samples; the last, partial batch is kept."""
    return -(-n // batch_size)


def check_limit(limit: Any) -> int | None:
    """`dataset.limit` as an int, or None for all of it; DataError unless a positive integer."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise DataError(f"dataset.limit must be a positive integer (the subset size) or null for "
                        f"all of the data, got {limit!r}.")
    return limit


def subset_indices(n: int, limit: int | None) -> torch.Tensor:
    """A deterministic subset of range(n) of size `limit` (all of it when None), fixed across
    run seeds, in random order so classes stay mixed."""
    limit = check_limit(limit)
    if limit is None or limit >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=gen)[: int(limit)].sort().values


def batch_slices(n: int, batch_size: int, start: int = 0) -> Iterable[slice]:
    for b in range(start, num_batches(n, batch_size)):
        yield slice(b * batch_size, min((b + 1) * batch_size, n))


def content_fingerprint(parts: Iterable[tuple[str, bytes]]) -> str:
    """sha256[:16] over each (name, bytes) in the order given: the run's record of the bytes it
    read (data identity `content`), so runs on different copies of a dataset never pool."""
    digest = hashlib.sha256()
    for name, data in parts:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")   # all but tab, newline, CR


def check_text(name: str, data: bytes, folder: Path, encoding: str, fix: str) -> str:
    """`data` decoded, or DataError when it is not a whole text file: it must decode, hold no
    control byte but tab, CR and newline (random bytes do), and end with a newline (a file cut
    short almost never does)."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{name} in {folder} is not {encoding} text (byte {err.start}). "
                        f"{fix}") from err
    bad = _CONTROL.search(data)
    if bad is not None:
        raise DataError(f"{name} in {folder} holds a control byte (0x{data[bad.start()]:02x} at "
                        f"{bad.start()}): not a text file. {fix}")
    if not data.endswith(b"\n"):
        raise DataError(f"{name} in {folder} does not end with a newline: cut short? {fix}")
    return text


def one_line_reason(err: BaseException) -> str:
    """An exception's message on one line, at most 160 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def download_into(root: Path, folder: Path, fetch: Callable[[Path], Path], what: str, url: str,
                  by_hand: str) -> None:
    """`fetch(tmp)` downloads into a fresh hidden folder under `root` and returns the folder there
    that holds the files, which then move into `folder`. A failure is one DataError line naming
    `what`, `url` and where to put the files by hand; nothing is left behind (no empty folder, no
    partial file): the files reach `folder` only once all of them have arrived."""
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        source = fetch(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and not (folder / path.name).exists():
                os.replace(path, folder / path.name)
    except Exception as err:  # urllib's, torchvision's (RuntimeError) and tarfile's errors alike
        raise DataError(f"could not download {what} from {url} ({one_line_reason(err)}). "
                        f"Put the file(s) there by hand: {by_hand}; or run again once the "
                        "network is back.") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_root and not any(root.iterdir()):
            root.rmdir()
