"""MMagic's generative metrics sampling conditional models."""
from types import ModuleType

import numpy as np


def _labels_from_dataset(sampler) -> list:
    """A batch of DataSamples, each holding the label of a random image of
    the dataset (the sampler's ``get_cond``, with the label as a label)."""
    from mmagic.structures import DataSample
    dataset = sampler.dataset
    indices = [np.random.randint(len(dataset))
               for _ in range(sampler.batch_size)]
    return [DataSample().set_gt_label(dataset.get_data_info(i)['gt_label'])
            for i in indices]


def fix_conditional_sampler(module: ModuleType) -> None:
    """Gives the samples of ``need_cond_input=True`` metrics real labels.

    ``GenerativeMetric.get_metric_sampler``'s iterator builds each label as
    ``torch.Tensor(cond)``: for an int ``cond`` that is an uninitialised
    float tensor of ``cond`` elements, not the label, so FID and IS of a
    conditional model use garbage classes (or fail on an empty tensor for
    class 0). The fixed iterator draws the same dataset indices with the
    same numpy calls and stores the label itself.
    """
    metric = module.GenerativeMetric
    if getattr(metric.get_metric_sampler, 'real_labels', False):
        return
    get_metric_sampler = metric.get_metric_sampler

    def with_real_labels(self, *args, **kwargs):
        sampler = get_metric_sampler(self, *args, **kwargs)
        sampler.get_cond = _labels_from_dataset.__get__(sampler)
        return sampler

    with_real_labels.real_labels = True
    metric.get_metric_sampler = with_real_labels
