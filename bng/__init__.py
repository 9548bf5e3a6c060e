"""bng: block-normalized gradient optimizers for PyTorch.

Yu, Huang, Lin, Salakhutdinov, Carbonell, "Block-normalized gradient method: an empirical
study for training deep neural network", arXiv:1707.04822.

    opt = bng.AdamNG(model, lr=1e-3)               # a real torch.optim.Adam, NG per layer
    opt = bng.block_normalize(torch.optim.RMSprop(model.parameters()), model, mode="clip")
    opt = bng.AdaGradBNG(model, lr=0.01)           # the appendix's Algorithm 2

The math, as pure functions over lists of tensors, is in :mod:`bng.functional`.
"""

from bng.adagradbng import AdaGradBNG
from bng.blocks import BlockPlan, layer_blocks, plan_blocks
from bng.normalize import block_grad_norms, block_normalize, grad_norms
from bng.optimizers import SGDMNG, AdaGradNG, AdamNG

__all__ = [
    "AdaGradBNG",        # Algorithm 2: its own step on the hook's normalized gradients
    "AdaGradNG",         # torch.optim.Adagrad + the hook
    "AdamNG",            # torch.optim.Adam + the hook
    "BlockPlan",         # one optimizer's partition into blocks, resolved once
    "SGDMNG",            # torch.optim.SGD + the hook
    "block_grad_norms",  # {block: norm} of an optimizer's last step, before normalization
    "block_normalize",   # the hook on any torch optimizer: the normalization's one definition
    "grad_norms",        # (B,) norms of the current gradients over a plan, no optimizer
    "layer_blocks",      # the paper's partition: one block per layer
    "plan_blocks",       # a BlockPlan for any block spec ("layer", "conv_bn", ...)
]
