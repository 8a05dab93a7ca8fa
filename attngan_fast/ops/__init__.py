"""The fused ops, each a ``torch.library`` custom op with a pure-PyTorch reference twin.

Every public function here validates its inputs (:mod:`.checks`), then runs the fused kernel for
the tensor's device when the backend is "fast" and the kernel takes the inputs, else the reference
(:mod:`attngan_fast.reference`); :mod:`.dispatch` holds that policy. One module per op family, each
laid out the same way: ``check_<op>_inputs``, the public ``<op>``, then the fakes
(``_<op>_fake``, ``_<op>_backward_fake``), the autograd formula (``_<op>_setup_context``,
``_<op>_backward``) and the per-device kernels (C++ from ``_C``; Triton launchers
``<op>_forward`` / ``<op>_backward`` in ``attngan_fast.kernels``).
"""
from .attention import word_region_attention
from .blocks import BatchNormArgs, batch_norm_args, count_batch, res_block, up_block, upsample_conv3x3, uses_batch_stats
from .damsm import damsm_word_similarity
from .down_blocks import down_block, tiled_code_conv
from .img_net import img_conv_tanh

__all__ = [
    "BatchNormArgs",
    "batch_norm_args",
    "count_batch",
    "damsm_word_similarity",
    "down_block",
    "img_conv_tanh",
    "res_block",
    "tiled_code_conv",
    "up_block",
    "upsample_conv3x3",
    "uses_batch_stats",
    "word_region_attention",
]
