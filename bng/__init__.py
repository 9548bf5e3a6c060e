"""bng: block-normalized gradient optimizers for PyTorch.

Yu, Huang, Lin, Salakhutdinov, Carbonell, "Block-normalized gradient method: an empirical
study for training deep neural network", arXiv:1707.04822.

    opt = bng.AdamNG(model, lr=1e-3)               # a real torch.optim.Adam, NG per layer
    opt = bng.block_normalize(torch.optim.RMSprop(model.parameters()), model, mode="clip")
    opt = bng.build(model, base="torch.optim.SGD", mode="adap", lr=0.1, momentum=0.9)
"""

from bng.adagradbng import AdaGradBNG
from bng.blocks import BlockPlan, conv_bn_blocks, layer_blocks, plan_blocks, resolve_blocks
from bng.functional import block_norms, block_scales, normalize_blocks_, scale_blocks_
from bng.normalize import (
    block_grad_norms,
    block_names,
    block_normalize,
    grad_norms,
    last_block_norms,
)
from bng.optimizers import SGDMNG, AdaGradNG, AdamNG, build

__all__ = [
    "AdaGradBNG",
    "AdaGradNG",
    "AdamNG",
    "BlockPlan",
    "SGDMNG",
    "block_grad_norms",
    "block_names",
    "block_normalize",
    "block_norms",
    "block_scales",
    "build",
    "conv_bn_blocks",
    "grad_norms",
    "last_block_norms",
    "layer_blocks",
    "normalize_blocks_",
    "plan_blocks",
    "resolve_blocks",
    "scale_blocks_",
]
