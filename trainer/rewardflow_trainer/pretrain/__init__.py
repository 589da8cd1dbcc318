"""Pretraining of the shapes model that `make demo` fine-tunes: `python -m rewardflow_trainer.pretrain shapes`.

Stage 1 trains a small VAE on renders of the shapes world, stage 2 an SD3 transformer on its latents
(flow matching, frozen random text encoders); the result is a diffusers SD3 folder. How the shipped
weights were made: rewardflow_trainer/weights/shapes-sd3/README.md.
"""

from rewardflow_trainer.pretrain.cli import main

__all__ = ["main"]
