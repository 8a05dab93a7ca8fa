"""The fused ops, each a ``torch.library`` custom op with a pure-PyTorch reference twin.

Every public function here validates its inputs, then runs the fused kernel for the tensor's
device when the backend is "fast", else the reference.
"""
from .attention import word_region_attention
from .blocks import BatchNormArgs, batch_norm_args, res_block, up_block, upsample_conv3x3, uses_batch_stats
from .damsm import damsm_word_similarity
from .down_blocks import down_block, tiled_code_conv
from .glu import glu

__all__ = [
    "BatchNormArgs",
    "batch_norm_args",
    "damsm_word_similarity",
    "down_block",
    "glu",
    "res_block",
    "tiled_code_conv",
    "up_block",
    "upsample_conv3x3",
    "uses_batch_stats",
    "word_region_attention",
]
