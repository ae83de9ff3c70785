"""FineDiffusion: a pretrained DiT fine-tuned to a two-tier taxonomy."""
from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from mmagic.registry import DIFFUSION_SCHEDULERS, MODELS
from mmagic.structures import DataSample

ModelType = Union[dict, nn.Module]

# SD-VAE latent scale used by DiT (and by Stable Diffusion 1.x).
SD_VAE_SCALE = 0.18215


@MODELS.register_module()
class FineDiffusion(BaseModel):
    """Class-conditional latent diffusion with a tiered class table.

    The VAE is frozen; what of the backbone trains is decided by the PEFT
    freeze (see :class:`PEFTFreezeHook`). Training follows
    :meth:`BaseModel.train_step` (preprocess, ``forward(mode='loss')``,
    update), so MMEngine's DDP wrapper drives it unchanged.

    Args:
        backbone (dict or nn.Module): A :class:`TieredDiT`.
        vae (dict or nn.Module, optional): A diffusers AutoencoderKL (through
            MMagic's wrapper). None trains in pixel space. Defaults to None.
        diffusion (dict): The :class:`DiTDiffusion` config.
        latent_scale (float): Factor applied to VAE latents. Defaults to
            0.18215 (SD-VAE).
        data_preprocessor (dict, optional): Defaults to MMagic's
            ``DataPreprocessor`` (images to [-1, 1]).
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 backbone: ModelType,
                 vae: Optional[ModelType] = None,
                 diffusion: dict = dict(type='DiTDiffusion'),
                 latent_scale: float = SD_VAE_SCALE,
                 data_preprocessor: Optional[dict] = dict(
                     type='DataPreprocessor'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = _build(backbone)
        self.vae = _build(vae) if vae is not None else None
        if self.vae is not None:
            self.vae.requires_grad_(False)
        self.diffusion = DIFFUSION_SCHEDULERS.build(diffusion)
        self.latent_scale = latent_scale

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] to (scaled, sampled) latents; identity without
        a VAE."""
        if self.vae is None:
            return images
        return self.vae.encode(images).latent_dist.sample() * self.latent_scale

    def loss(self, inputs: Tensor,
             data_samples: DataSample) -> Dict[str, Tensor]:
        """DiT's hybrid loss on a batch of images and subclass labels."""
        x0 = self.encode(inputs)
        labels = data_samples.gt_label.label.to(x0.device).long().flatten()
        rows = self.backbone.y_embedder.drop_labels(labels)
        t = self.diffusion.sample_timesteps(len(x0), x0.device)
        terms = self.diffusion.training_losses(
            lambda xt, steps: self.backbone(xt, steps, rows), x0, t)
        # Only keys containing 'loss' are summed; mse and vb are logged.
        return dict(
            loss=terms['loss'].mean(),
            mse=terms['mse'].mean().detach(),
            vb=terms['vb'].mean().detach())

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[DataSample] = None,
                mode: str = 'loss') -> Union[Dict[str, Tensor], List]:
        """Only ``mode='loss'`` is supported so far."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        raise NotImplementedError(f'FineDiffusion.forward mode {mode!r}')


def _build(cfg: ModelType) -> nn.Module:
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg
