"""Test instruments imported by the configs of subprocess tests."""
import json
import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from finediffusion.evaluation.sampling import ConditionalSampling, label_of
from mmagic.evaluation.metrics.base_gen_metric import GenerativeMetric
from mmagic.registry import HOOKS, METRICS, TRANSFORMS


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
