"""FID of class-conditional samples, through MMagic's FID implementation."""
import os.path as osp
from typing import Optional

from mmagic.evaluation.metrics import FrechetInceptionDistance
from mmagic.registry import METRICS
from mmagic.utils import MMAGIC_CACHE_DIR
from .requests import ConditionalSampling
from .weights import find_weights

# StyleGAN's TorchScript Inception (the reference FID network), the name
# MMagic downloads it under.
INCEPTION_FILE = 'inception-2015-12-05.pt'


@METRICS.register_module()
class ConditionalFID(ConditionalSampling, FrechetInceptionDistance):
    """MMagic's FID over samples of classes drawn from the dataset.

    The Inception weights come from ``inception_path`` or MMagic's cache dir
    (``~/.cache/openmmlab/mmagic/inception-2015-12-05.pt``), never from the
    network; real-image statistics are cached by MMagic (``inception_pkl``
    or its cache dir) and reused.

    Args:
        fake_nums (int): Generated images (the paper: 10,000 on iNat).
        real_nums (int): Real images for the statistics; -1 takes all.
        inception_path (str, optional): The TorchScript Inception file.
        inception_pkl (str, optional): Where real statistics are cached.
        sample_model (str): 'ema' or 'orig'. Defaults to 'ema'.
        sample_kwargs (dict, optional): Sampling options of the model
            (``num_sampling_steps``, ``guidance_scale``, ``scheduler``).
        seed (int): Seed of the label draw. Defaults to 0.
        prefix (str): Metric name prefix. Defaults to 'FID'.
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
    """

    SAMPLER_MODE = 'FineDiffusionConditional'

    def __init__(self,
                 fake_nums: int,
                 real_nums: int = -1,
                 inception_path: Optional[str] = None,
                 inception_pkl: Optional[str] = None,
                 sample_model: str = 'ema',
                 sample_kwargs: Optional[dict] = None,
                 seed: int = 0,
                 prefix: str = 'FID',
                 collect_device: str = 'cpu') -> None:
        path = find_weights(inception_path,
                            osp.join(MMAGIC_CACHE_DIR, INCEPTION_FILE),
                            'Inception for FID', 'inception_path')
        super().__init__(
            fake_nums,
            real_nums,
            inception_style='StyleGAN',
            inception_path=path,
            inception_pkl=inception_pkl,
            need_cond_input=True,
            sample_model=sample_model,
            collect_device=collect_device,
            prefix=prefix,
            sample_kwargs=sample_kwargs or {})
        self.seed = seed

