"""End to end: one GAN training step (every D, then G with the DAMSM loss) and one sampling batch,
reference vs fast backend, on the demo's synthetic-birds shapes (64 + 128 px, batch 16) — and on
CUDA on the CUB shapes (bird_attn2: 64/128/256 px, batch 20)."""
from __future__ import annotations

import pytest
import torch

import attngan_fast
from attngan_fast import config
from attngan_fast.data import SyntheticBirds
from attngan_fast.models import RNN_ENCODER
from attngan_fast.models.small_cnn import SmallImageEncoder
from attngan_fast.training import GANTrainer, TrainOptions
from conftest import IMPLS, record, synchronized

CASES = {
    "demo_birds": ("cpu", {"TRAIN.BATCH_SIZE": 16}),
    "bird_attn2": ("cuda", {"TRAIN.BATCH_SIZE": 20, "DAMSM.IMAGE_ENCODER": "small_cnn",
                            "DATASET_NAME": "synthetic_birds", "DATA_DIR": "", "SYNTHETIC.NUM_IMAGES": 200}),
}


def make_trainer(name: str, tmp_path) -> GANTrainer:
    device, overrides = CASES[name]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cfg = config.load(name, **{"SYNTHETIC.NUM_IMAGES": 200, **overrides})
    data = SyntheticBirds.from_config(cfg, "train", seed=0)
    text_encoder = RNN_ENCODER(data.n_words, cfg, nhidden=cfg.TEXT.EMBEDDING_DIM)
    image_encoder = SmallImageEncoder(cfg.TEXT.EMBEDDING_DIM, cfg.DAMSM.SMALL_CNN_WIDTH, cfg.DAMSM.SMALL_CNN_INPUT)
    options = TrainOptions(out_dir=str(tmp_path), device=device, progress=False, sample_every=0)
    return GANTrainer(cfg, data, text_encoder, image_encoder, options, ixtoword=data.ixtoword)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
def test_train_step(benchmark, tmp_path, name, impl):
    trainer = make_trainer(name, tmp_path)
    batches = next(iter(trainer._loader(0)))
    record(benchmark, group=f"gan train step [{name}]", impl=impl, device=trainer.device,
           shapes={"batch": trainer.batch_size, "stages": trainer.cfg.TREE.BRANCH_NUM, "gf_dim": trainer.cfg.GAN.GF_DIM})
    with attngan_fast.backend(impl):
        trainer.train_step(batches)  # warm-up
        benchmark.pedantic(synchronized(lambda: trainer.train_step(batches), trainer.device), rounds=5,
                           warmup_rounds=1, iterations=1)
