"""The fused ops, each a ``torch.library`` custom op with a pure-PyTorch reference twin.

Every public function here validates its inputs, then runs the fused kernel for the tensor's
device when the backend is "fast", else the reference.
"""
from .attention import word_region_attention
from .damsm import damsm_word_similarity
from .glu import glu

__all__ = ["damsm_word_similarity", "glu", "word_region_attention"]
