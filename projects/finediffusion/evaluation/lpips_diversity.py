"""Intra-class diversity: mean pairwise LPIPS between samples of a class."""
import itertools
import os.path as osp
from typing import Optional, Sequence

import lpips
import torch
import torch.nn.functional as F
from mmengine.model import is_model_wrapper

from mmagic.evaluation.metrics.base_gen_metric import GenerativeMetric
from mmagic.registry import METRICS
from .requests import ConditionalSampling, fake_image
from .weights import find_weights
from ..weights_only import load_weights

# torchvision's ImageNet AlexNet, the backbone of LPIPS('alex').
ALEXNET_FILE = 'alexnet-owt-7be5be79.pth'
MIN_SIDE = 64


def build_lpips(backbone_path: Optional[str]) -> lpips.LPIPS:
    """LPIPS (AlexNet, v0.1) with the backbone read from disk.

    The linear calibration layers ship inside the ``lpips`` package; the
    AlexNet weights would be downloaded by torchvision, so they are read
    from ``backbone_path`` (default: torch's hub cache) instead.
    """
    path = find_weights(
        backbone_path,
        osp.join(torch.hub.get_dir(), 'checkpoints', ALEXNET_FILE),
        'AlexNet backbone of LPIPS', 'backbone_path')
    model = lpips.LPIPS(net='alex', pnet_rand=True, verbose=False)
    state = load_weights(path, map_location='cpu')
    # LPIPS regroups alexnet.features[i] as net.slice<k>.<i>.
    for name, param in model.net.named_parameters():
        _, index, kind = name.split('.')
        key = f'features.{index}.{kind}'
        if key not in state or state[key].shape != param.shape:
            raise ValueError(f'{path} is not a torchvision AlexNet state '
                             f'dict: key {key} missing or of another shape')
        param.data.copy_(state[key])
    return model.eval().requires_grad_(False)


@METRICS.register_module()
class LPIPSDiversity(ConditionalSampling, GenerativeMetric):
    """Mean LPIPS between pairs of generated images of the same class
    (higher is more diverse; the FineDiffusion paper reports 0.721 on iNat).

    Classes are drawn from the dataset; ``samples_per_class`` images are
    generated for each, and every pair among them is compared.

    Args:
        fake_nums (int): Generated images in all.
        samples_per_class (int): Images per drawn class, at least 2.
            Defaults to 4.
        backbone_path (str, optional): torchvision AlexNet weights
            (default: ``<torch hub>/checkpoints/alexnet-owt-7be5be79.pth``).
        sample_model (str): 'ema' or 'orig'. Defaults to 'ema'.
        sample_kwargs (dict, optional): Sampling options of the model.
        seed (int): Seed of the class draw. Defaults to 0.
        prefix (str): Defaults to 'LPIPS'.
        collect_device (str): Defaults to 'cpu'.
    """

    SAMPLER_MODE = 'FineDiffusionPerClass'

    def __init__(self,
                 fake_nums: int,
                 samples_per_class: int = 4,
                 backbone_path: Optional[str] = None,
                 sample_model: str = 'ema',
                 sample_kwargs: Optional[dict] = None,
                 seed: int = 0,
                 prefix: str = 'LPIPS',
                 collect_device: str = 'cpu') -> None:
        if samples_per_class < 2:
            raise ValueError('samples_per_class must be at least 2')
        super().__init__(fake_nums, need_cond_input=True,
                         sample_model=sample_model,
                         collect_device=collect_device, prefix=prefix,
                         sample_kwargs=sample_kwargs or {})
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.lpips = build_lpips(backbone_path)

    def prepare(self, module, dataloader) -> None:
        module = module.module if is_model_wrapper(module) else module
        self.lpips.to(module.data_preprocessor.device)


    @torch.no_grad()
    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        if len(self.fake_results) >= self.fake_nums_per_device:
            return
        device = next(self.lpips.parameters()).device
        images = torch.stack([
            fake_image(pred, self.sample_model) for pred in data_samples
        ]).to(device)
        # BGR [0, 255] (MMagic's output form) to RGB [-1, 1].
        images = images[:, [2, 1, 0]].float() / 127.5 - 1
        side = min(images.shape[-2:])
        if side < MIN_SIDE:
            # AlexNet's five stages need at least 64 px (toy data is 16).
            images = F.interpolate(images, scale_factor=MIN_SIDE / side,
                                   mode='bilinear', align_corners=False)
        k = self.samples_per_class
        for group in images.split(k):
            pairs = list(itertools.combinations(range(len(group)), 2))
            a = group[[i for i, _ in pairs]]
            b = group[[j for _, j in pairs]]
            distance = self.lpips(a, b).mean().item()
            # One entry per image, so that MMagic counts images.
            self.fake_results.extend([distance] * len(group))

    def compute_metrics(self, fake_results: list) -> dict:
        return dict(diversity=float(sum(fake_results) / len(fake_results)))
