"""AttnGAN / DAMSM losses (original ``code/miscc/losses.py``; docs/original_attngan.md §6).

- :mod:`.oracle`: the original's losses, literal, no backend dispatch (the oracle);
- :mod:`.fused`: the DAMSM losses on the fused similarity op (same values and gradients);
- :mod:`.choose`: the backend's choice between them (:func:`damsm_loss_terms`) and
  :func:`generator_loss` with it.

``words_loss`` and ``sent_loss`` here are the oracle's; ``attngan_fast.accelerate_losses`` gives
the fused ones with the original signatures.
"""
from .choose import damsm_loss_terms, generator_loss
from .oracle import (
    KL_loss,
    class_mask,
    cosine_similarity,
    discriminator_loss,
    func_attention,
    sent_loss,
    word_similarities,
    words_loss,
)

__all__ = [
    "KL_loss",
    "class_mask",
    "cosine_similarity",
    "damsm_loss_terms",
    "discriminator_loss",
    "func_attention",
    "generator_loss",
    "sent_loss",
    "word_similarities",
    "words_loss",
]
