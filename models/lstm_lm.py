"""Word-level LSTM language model for Penn Treebank, as in Yu et al. (arXiv 1707.04822):
2 LSTM layers of 200 units, following Zaremba et al. 2014 ("Recurrent Neural Network
Regularization"): uniform +-0.1 init and dropout on the non-recurrent connections only.

Batch first: x is (B, T) token ids, logits are (B, T, V). The hidden state (h, c) is returned so
the engine can carry it across BPTT windows (it detaches it between windows).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Hidden = tuple[Tensor, Tensor]


class LSTMLM(nn.Module):
    """Embedding -> dropout -> L-layer LSTM (dropout between layers) -> dropout -> Linear.

    Dropout is applied to the embedding output, between LSTM layers (``nn.LSTM(dropout=...)``
    drops every layer's output but the last) and before the decoder, never on the recurrent
    h -> h connections (Zaremba et al. 2014). Every parameter, biases included, is drawn from
    U(-init_range, init_range), as in Zaremba's ``ptb_word_lm``. Embedding and decoder weights
    are not tied (the paper does not tie them).

    Args:
        vocab_size: V, 10000 for PTB; the engine fills it from the loaded data.
        emb: embedding width; 200 in the paper.
        hidden: LSTM units per layer; 200 in the paper.
        layers: stacked LSTM layers; 2 in the paper.
        dropout: drop probability of the non-recurrent connections; 0.5 in the paper.
        init_range: half-width of the uniform init; 0.1 as in Zaremba et al.
    """

    def __init__(
        self,
        vocab_size: int,
        emb: int = 200,
        hidden: int = 200,
        layers: int = 2,
        dropout: float = 0.5,
        init_range: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab_size)
        self.hidden_size = hidden
        self.num_layers = layers
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -init_range, init_range)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero (h, c), each (layers, B, hidden), on the model's device and dtype."""
        weight = self.decoder.weight
        shape = (self.num_layers, batch_size, self.hidden_size)
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def forward(self, x: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        """x: (B, T) int64 -> logits (B, T, V) and the new (h, c), each (layers, B, hidden).

        ``hidden=None`` starts from zeros; pass the previous call's hidden to carry the state.
        """
        if hidden is None:
            hidden = self.init_hidden(x.shape[0])
        embedded = self.drop(self.embedding(x))  # (B, T, emb)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no bf16 LSTM primitive on x86 CPUs without native bf16 ("could not
            # create a primitive descriptor", pytorch/pytorch#88136); ATen's own LSTM does run
            # in bf16, so bypass oneDNN for this call only. CUDA uses cuDNN, untouched.
            with torch.backends.mkldnn.flags(enabled=False):
                output, hidden = self.lstm(embedded, hidden)  # (B, T, hidden)
        else:
            output, hidden = self.lstm(embedded, hidden)  # (B, T, hidden)
        return self.decoder(self.drop(output)), hidden


def lstm_lm(
    vocab_size: int, emb: int = 200, hidden: int = 200, layers: int = 2, dropout: float = 0.5
) -> LSTMLM:
    """The paper's 2x200 LSTM language model; see :class:`LSTMLM`."""
    return LSTMLM(vocab_size, emb=emb, hidden=hidden, layers=layers, dropout=dropout)


__all__ = ["LSTMLM", "lstm_lm"]
