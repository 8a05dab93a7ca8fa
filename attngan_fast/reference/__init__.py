"""The original AttnGAN math in plain PyTorch: the oracle of every fused op.

A leaf package: it imports torch only, nothing of ``attngan_fast``. Each function keeps the
original's computation (``docs/original_attngan.md``); input validation is the callers' job
(``attngan_fast.ops`` checks every argument before it runs a kernel or one of these).

- :mod:`.attention`: word-region attention of the generator (both mask modes);
- :mod:`.damsm`: the DAMSM word-level similarities (``func_attention``, ``cosine_similarity``,
  ``word_similarities``) and the twin of the fused similarity op;
- :mod:`.blocks`: GLU, the generator blocks fused by ``attngan_fast.ops.blocks`` and the
  discriminator blocks fused by ``attngan_fast.ops.down_blocks``, G's last layer (``img_conv_tanh``).
"""
from .attention import MASK_MODES, word_region_attention
from .blocks import BatchNormArgs, down_block, glu, img_conv_tanh, res_block, tiled_code_conv, up_block, upsample_conv3x3
from .damsm import cosine_similarity, damsm_word_similarity, func_attention, word_similarities

__all__ = [
    "MASK_MODES",
    "BatchNormArgs",
    "cosine_similarity",
    "damsm_word_similarity",
    "down_block",
    "func_attention",
    "glu",
    "img_conv_tanh",
    "res_block",
    "tiled_code_conv",
    "up_block",
    "upsample_conv3x3",
    "word_region_attention",
    "word_similarities",
]
