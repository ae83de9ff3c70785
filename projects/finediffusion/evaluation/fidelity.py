"""Per-class fidelity: a classifier's accuracy on generated images."""
from typing import Optional, Sequence

import torch
from mmengine.model import is_model_wrapper

from mmagic.evaluation.metrics.base_gen_metric import GenerativeMetric
from mmagic.registry import METRICS
from .judge import Judge, accuracy
from .requests import ConditionalSampling, fake_image, label_of


@METRICS.register_module()
class ClassifierFidelity(ConditionalSampling, GenerativeMetric):
    """Top-1 accuracy of a user's classifier on generated images.

    The classifier is an mmpretrain model (config + checkpoint) whose classes
    are the subclass ids. Reported: subclass accuracy, and superclass
    accuracy (the predicted subclass's superclass is the requested one's).

    Args:
        classifier_config (str): mmpretrain config of the classifier.
        classifier_checkpoint (str): Its weights (a plain state dict or an
            MMEngine checkpoint, read with ``weights_only``).
        fake_nums (int): Generated images to classify.
        sample_model (str): 'ema' or 'orig'. Defaults to 'ema'.
        sample_kwargs (dict, optional): Sampling options of the model.
        seed (int): Seed of the class draw. Defaults to 0.
        prefix (str): Defaults to 'Fidelity'.
        collect_device (str): Defaults to 'cpu'.
    """

    SAMPLER_MODE = 'FineDiffusionConditional'

    def __init__(self,
                 classifier_config: str,
                 classifier_checkpoint: str,
                 fake_nums: int,
                 sample_model: str = 'ema',
                 sample_kwargs: Optional[dict] = None,
                 seed: int = 0,
                 prefix: str = 'Fidelity',
                 collect_device: str = 'cpu') -> None:
        super().__init__(fake_nums, need_cond_input=True,
                         sample_model=sample_model,
                         collect_device=collect_device, prefix=prefix,
                         sample_kwargs=sample_kwargs or {})
        self.judge = Judge(classifier_config, classifier_checkpoint)
        self.seed = seed
        self.sub2super: Optional[torch.Tensor] = None

    def prepare(self, module, dataloader) -> None:
        module = module.module if is_model_wrapper(module) else module
        self.sub2super = module.backbone.sub2super.cpu()
        self.judge.to(module.data_preprocessor.device)

    @torch.no_grad()
    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        if len(self.fake_results) >= self.fake_nums_per_device:
            return
        # MMagic's generated images are BGR, as the classifier takes them.
        images = torch.stack([
            fake_image(pred, self.sample_model).round().clamp(0, 255).byte()
            for pred in data_samples
        ])
        predicted = self.judge(images, channel_order='bgr')['pred'].tolist()
        self.fake_results.extend(
            (label_of(pred), guess)
            for pred, guess in zip(data_samples, predicted))

    def compute_metrics(self, fake_results: list) -> dict:
        labels = torch.tensor([label for label, _ in fake_results])
        guesses = torch.tensor([guess for _, guess in fake_results])
        return accuracy(guesses, labels, self.sub2super.tolist())
