"""CNN-rand sentence classifier (Kim 2014, "Convolutional Neural Networks for Sentence
Classification"), used by Yu et al. (arXiv 1707.04822) on the MR / rt-polarity data.

Randomly initialized 128-d word embedding, one convolution of 100 maps per window width
(3, 4, 5) with ReLU, max-over-time pooling, concatenation (300 features), dropout 0.5, Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDING_ID = 0  # DESIGN.md: token id 0 is padding
KIM_EMB_INIT = 0.25  # Kim's code: random word vectors from U(-0.25, 0.25)


class KimCNN(nn.Module):
    """Kim's CNN-rand.

    Padding: token 0 is padding and its embedding is fixed at zero (``padding_idx``), as Kim's
    code resets the padding row to zero after each update. Sentences (after the dataset's own
    padding) shorter than the widest window are right-padded with id 0 inside ``forward`` up to
    that width, so every window yields at least one position; this equals padding in the data.

    Init: embedding U(-emb_init, emb_init); Kim's code draws unknown / random words from
    U(-0.25, 0.25), the widely copied TensorFlow port from U(-1, 1). Conv and Linear keep
    PyTorch's defaults.

    Max-norm: Kim rescales each class's weight vector of the final layer to L2 norm <= 3 after
    every step. The paper (Yu et al.) trains "the basic version", so ``max_norm=None`` (off) is
    the default. With ``max_norm`` set, the engine calls :meth:`apply_max_norm_` after each
    ``optimizer.step()``; it is a no-op when ``max_norm`` is None.

    Args:
        vocab_size: V, including the padding id 0; the engine fills it from the loaded data.
        emb: embedding width; 128 in the paper.
        windows: convolution window widths in tokens; (3, 4, 5) as in Kim.
        maps: feature maps per window width; 100 as in Kim.
        num_classes: 2 for rt-polarity.
        dropout: drop probability on the concatenated features; 0.5 as in Kim.
        max_norm: L2 bound on each row of the final Linear weight, None = no constraint.
        emb_init: bound of the embedding's uniform init; None = Kim's 0.25.
    """

    def __init__(
        self,
        vocab_size: int,
        emb: int = 128,
        windows: tuple[int, ...] | list[int] = (3, 4, 5),
        maps: int = 100,
        num_classes: int = 2,
        dropout: float = 0.5,
        max_norm: float | None = None,
        emb_init: float | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=PADDING_ID)
        bound = KIM_EMB_INIT if emb_init is None else emb_init
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        with torch.no_grad():
            self.embedding.weight[PADDING_ID].zero_()
        # Conv1d over time with the embedding as channels == Kim's (width x emb) 2-D filter
        self.convs = nn.ModuleList(nn.Conv1d(emb, maps, width) for width in windows)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * len(windows), num_classes)
        self.max_window = max(windows)
        self.max_norm = max_norm

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L) int64 token ids, 0 = padding -> logits (B, num_classes)."""
        if x.shape[1] < self.max_window:  # shape check only, no device sync
            x = F.pad(x, (0, self.max_window - x.shape[1]), value=PADDING_ID)
        embedded = self.embedding(x).transpose(1, 2)  # (B, emb, L)
        # each conv: (B, maps, L - width + 1), max over time -> (B, maps)
        features = [F.relu(conv(embedded)).amax(dim=2) for conv in self.convs]
        return self.fc(self.drop(torch.cat(features, dim=1)))  # (B, maps * len(windows))

    @torch.no_grad()
    def apply_max_norm_(self) -> None:
        """Kim's constraint: rescale each row of ``fc.weight`` (one per class) to L2 norm
        <= ``max_norm``. Call after ``optimizer.step()``; no-op when ``max_norm`` is None.
        Runs on device without a host sync (``torch.renorm``)."""
        if self.max_norm is None:
            return
        weight = self.fc.weight  # (C, maps * len(windows))
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=self.max_norm))


def kim_cnn(vocab_size: int, **options) -> KimCNN:
    """Kim's CNN-rand; see :class:`KimCNN` for the options. ``max_norm=3.0`` turns on Kim's
    constraint."""
    return KimCNN(vocab_size, **options)
