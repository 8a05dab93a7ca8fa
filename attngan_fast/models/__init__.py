"""The reference AttnGAN models in plain PyTorch, with the original names (checkpoint compatible)."""
from .attention import MASK_MODES, GlobalAttentionGeneral, word_region_attention_reference
from .blocks import (
    GLU,
    Block3x3_leakRelu,
    Block3x3_relu,
    Block3x3LeakRelu,
    Block3x3Relu,
    DownBlock,
    ImageEncoder16,
    ResBlock,
    UpBlock,
    check_shape,
    conv1x1,
    conv3x3,
    downBlock,
    encode_image_by_16times,
    upBlock,
)
from .discriminator import D_GET_LOGITS, D_NET64, D_NET128, D_NET256
from .encoders import CNN_ENCODER, INCEPTION_BLOCKS, RNN_ENCODER
from .generator import CA_NET, G_DCGAN, G_NET, GET_IMAGE_G, INIT_STAGE_G, NEXT_STAGE_G
from .init import weights_init

__all__ = [
    "MASK_MODES",
    "GlobalAttentionGeneral",
    "word_region_attention_reference",
    "GLU",
    "Block3x3_leakRelu",
    "Block3x3_relu",
    "Block3x3LeakRelu",
    "Block3x3Relu",
    "DownBlock",
    "ImageEncoder16",
    "ResBlock",
    "UpBlock",
    "check_shape",
    "conv1x1",
    "conv3x3",
    "downBlock",
    "encode_image_by_16times",
    "upBlock",
    "D_GET_LOGITS",
    "D_NET64",
    "D_NET128",
    "D_NET256",
    "CNN_ENCODER",
    "INCEPTION_BLOCKS",
    "RNN_ENCODER",
    "CA_NET",
    "G_DCGAN",
    "G_NET",
    "GET_IMAGE_G",
    "INIT_STAGE_G",
    "NEXT_STAGE_G",
    "weights_init",
]
