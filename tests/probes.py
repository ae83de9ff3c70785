"""Test instruments imported by the configs of subprocess tests."""
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from finediffusion.evaluation.requests import ConditionalSampling, label_of
from finediffusion.models import FineDiffusion
from mmagic.evaluation.metrics.base_gen_metric import GenerativeMetric
from mmagic.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS


@HOOKS.register_module()
class DistProbeHook(Hook):
    """Writes ``probe_rank<r>.pt``: the sample indices this rank's sampler
    handed to training, the backbone's parameters and the EMA buffers."""

    def before_train(self, runner) -> None:
        # MMEngine's InfiniteSampler yields from one generator, which the
        # data loader starts at the first batch, after this hook.
        sampler = runner.train_dataloader.sampler
        self.seen, live = [], sampler.indices

        def recorded():
            for index in live:
                self.seen.append(int(index))  # not a SampleIndex
                yield index

        sampler.indices = recorded()

    def after_train(self, runner) -> None:
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        torch.save(
            dict(params={k: v.detach().clone()
                         for k, v in model.backbone.named_parameters()},
                 ema={k: v.clone() for k, v in model.ema.state_dict().items()},
                 trainable=model.trainable, seen=self.seen),
            osp.join(runner.work_dir, f'probe_rank{get_rank()}.pt'))


@HOOKS.register_module()
class LossProbeHook(Hook):
    """Appends (iteration, loss) of every step to ``losses_<pid>.jsonl``."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        path = osp.join(runner.work_dir, f'losses_{os.getpid()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps([runner.iter + 1,
                                float(outputs['loss'])]) + '\n')



@METRICS.register_module()
class GeneratedLabelsProbe(ConditionalSampling, GenerativeMetric):
    """Counts the images a test loop generates and the classes asked for:
    a metric that needs no pretrained weights."""

    SAMPLER_MODE = 'FineDiffusionPerClass'

    def __init__(self, fake_nums: int, prefix: str = 'Probe') -> None:
        super().__init__(fake_nums, need_cond_input=True, prefix=prefix,
                         sample_kwargs={})
        self.seed = 0

    def process(self, data_batch, data_samples) -> None:
        self.fake_results.extend(label_of(pred) for pred in data_samples)

    def compute_metrics(self, fake_results: list) -> dict:
        return dict(images=len(fake_results), classes=len(set(fake_results)))


@TRANSFORMS.register_module()
class PipelineCallProbe:
    """Appends a line to ``<folder>/calls_<pid>.txt`` for every sample that
    goes through the pipeline, in whichever process loads it (main or data
    worker)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, results: dict) -> dict:
        os.makedirs(self.folder, exist_ok=True)
        with open(osp.join(self.folder, f'calls_{os.getpid()}.txt'),
                  'a') as f:
            f.write(f"{results.get('sample_idx')}\n")
        return results


def pipeline_calls(folder: str) -> int:
    """How many samples went through every ``PipelineCallProbe(folder)``."""
    if not osp.isdir(folder):
        return 0
    total = 0
    for name in os.listdir(folder):
        with open(osp.join(folder, name)) as f:
            total += sum(1 for _ in f)
    return total


@MODELS.register_module()
class PerfectGenerator(FineDiffusion):
    """A FineDiffusion that has learnt its training set perfectly: for each
    requested label it returns a training image of that class, exactly as
    its data preprocessor hands training images to the model (in the
    model's channel order, in [-1, 1]); :meth:`predict` and ``destruct``
    are FineDiffusion's own.

    The images of a class come round in dataset order: the i-th request of
    a class in a call gets its (i mod n)-th image, so the consecutive
    samples of a class that LPIPS diversity compares are its real images.
    Each call appends ``{"num_sampling_steps", "labels", "paths"}`` to
    ``record`` (a JSON-lines file), so that a test can score the returned
    real images itself; metrics tell their calls apart by
    ``sample_kwargs.num_sampling_steps``.

    Args:
        dataset (dict): The training dataset config (with its pipeline).
        record (str): Where the calls are recorded.
        **kwargs: FineDiffusion's.
    """

    def __init__(self, dataset: dict, record: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset_cfg = dataset
        self.record = record
        self._dataset = None

    def sample(self, labels: torch.Tensor, num_sampling_steps=None, *args,
               **kwargs) -> torch.Tensor:
        if self._dataset is None:
            # Outside a Runner (tools/sample.py) too, in MMagic's scope.
            with DefaultScope.overwrite_default_scope('mmagic'):
                self._dataset = DATASETS.build(self.dataset_cfg)
        dataset = self._dataset
        by_class = {}
        for index in range(len(dataset)):
            label = dataset.get_data_info(index)['gt_label']
            label = int(np.asarray(label).reshape(-1)[0])
            by_class.setdefault(label, []).append(index)
        seen, picks = {}, []
        for label in labels.tolist():
            indices = by_class[label]
            picks.append(indices[seen.get(label, 0) % len(indices)])
            seen[label] = seen.get(label, 0) + 1
        items = [dataset[index] for index in picks]
        images = self.data_preprocessor(pseudo_collate(items),
                                        training=True)['inputs']
        with open(self.record, 'a') as f:
            f.write(json.dumps(dict(
                num_sampling_steps=num_sampling_steps, labels=labels.tolist(),
                paths=[dataset.get_data_info(i)['gt_path']
                       for i in picks])) + '\n')
        return images.to(labels.device)


@PRETRAIN_MODELS.register_module()
class MeanColour(torch.nn.Module):
    """An mmpretrain backbone whose feature is the mean colour of the image
    (as its data preprocessor hands it over), (N, 3). With a linear head
    holding class colours it is a nearest-colour classifier, whose verdict
    a channel swap changes; a trained network would be slow to make and
    only approximately right."""

    def forward(self, x: torch.Tensor) -> tuple:
        return (x.mean(dim=(2, 3)), )
