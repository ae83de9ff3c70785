"""Class-conditional generation requests for MMagic's generative metrics."""
import math
from typing import Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmagic.structures import DataSample
from ..engine.label_range import check_label_range


class ConditionalRequests:
    """Batches asking the model for images of classes drawn from a dataset.

    Labels are drawn from the dataset's images (so classes come in the data's
    proportions), each repeated ``per_class`` times (consecutive samples of a
    class, for diversity metrics). Each rank draws its own labels from a
    seed offset by its rank. MMagic's own sampler builds labels with
    ``torch.Tensor(int)``, an uninitialized tensor of that length, which is
    why the plugin's metrics use this one.

    Args:
        dataset: A dataset whose ``get_data_info(i)['gt_label']`` is the
            subclass id of image i.
        num_images (int): Images to request on this rank.
        batch_size (int): Images per batch (a multiple of ``per_class``).
        per_class (int): Consecutive images of one class. Defaults to 1.
        sample_model (str): 'ema' or 'orig'.
        sample_kwargs (dict): Passed to the model's sampling.
        seed (int): Base seed of the label draw. Defaults to 0.
    """

    def __init__(self,
                 dataset,
                 num_images: int,
                 batch_size: int,
                 per_class: int = 1,
                 sample_model: str = 'ema',
                 sample_kwargs: Optional[dict] = None,
                 seed: int = 0) -> None:
        self.dataset = dataset
        self.batch_size = max(per_class, batch_size // per_class * per_class)
        self.num_images = math.ceil(num_images / per_class) * per_class
        self.per_class = per_class
        self.sample_model = sample_model
        self.sample_kwargs = sample_kwargs or {}
        self.rng = np.random.default_rng(seed + get_dist_info()[0])

    def __len__(self) -> int:
        return math.ceil(self.num_images / self.batch_size)

    def _label(self, index: int) -> int:
        label = self.dataset.get_data_info(index)['gt_label']
        return int(np.asarray(label).reshape(-1)[0])

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, self.num_images, self.batch_size):
            count = min(self.batch_size, self.num_images - start)
            picks = self.rng.integers(len(self.dataset),
                                      size=count // self.per_class)
            samples: List[DataSample] = []
            for index in picks:
                for _ in range(self.per_class):
                    sample = DataSample()
                    sample.set_gt_label(torch.tensor([self._label(index)]))
                    samples.append(sample)
            yield dict(
                inputs=dict(
                    sample_model=self.sample_model,
                    num_batches=len(samples),
                    sample_kwargs=self.sample_kwargs),
                data_samples=samples)


class ConditionalSampling:
    """Mixin of the plugin's generative metrics: their images are requested
    through :class:`ConditionalRequests`, ``samples_per_class`` at a time.
    The metric sets ``seed``, ``sample_model`` and ``sample_kwargs``."""

    samples_per_class = 1

    def get_metric_sampler(self, model, dataloader, metrics):
        # Before any image is generated: labels beyond the model's table.
        module = model.module if is_model_wrapper(model) else model
        num_classes = getattr(getattr(module, 'backbone', None),
                              'num_classes', None)
        if num_classes is not None:
            check_label_range(dataloader.dataset, num_classes, 'test')
        return ConditionalRequests(
            dataloader.dataset,
            max(metric.fake_nums_per_device for metric in metrics),
            dataloader.batch_size,
            per_class=self.samples_per_class,
            sample_model=self.sample_model,
            sample_kwargs=self.sample_kwargs,
            seed=self.seed)


def fake_image(pred: dict, sample_model: str) -> Tensor:
    """The generated image of one model output (BGR, [0, 255], CHW)."""
    pred = pred.get(sample_model, pred)
    return pred['fake_img']


def label_of(pred: dict) -> int:
    """The subclass id a generated image was asked for."""
    label = pred['gt_label']
    label = label['label'] if isinstance(label, dict) else label
    return int(torch.as_tensor(label).reshape(-1)[0])
