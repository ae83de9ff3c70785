"""Paired comparisons of judged samples: the difference of two sampling
modes on the same noise and labels, with an interval over classes."""
from typing import Dict, Sequence

import numpy as np
from torch import Tensor


def paired_difference(hits_a: np.ndarray,
                      hits_b: np.ndarray,
                      labels: Tensor,
                      resamples: int = 10000,
                      seed: int = 0) -> Dict[str, object]:
    """Subclass top-1 of a minus b on the same noise and labels.

    The 95% interval comes from resampling whole classes: the samples of one
    class share its difficulty, so they are not independent draws.

    Args:
        hits_a (np.ndarray): (N, ) bool, whether each sample of a was judged
            its subclass.
        hits_b (np.ndarray): (N, ) bool, the same for b, sample by sample.
        labels (Tensor): (N, ) subclass ids of the samples.
        resamples (int): Bootstrap draws of the classes. Defaults to 10000.
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        dict: ``difference``, the mean over classes of the per-class
        difference in top-1 (a fraction in [-1, 1]), and ``interval95``,
        its [low, high] percentile interval.
    """
    labels = labels.numpy()
    per_class = np.array([(hits_a[labels == c].astype(float) -
                           hits_b[labels == c]).mean()
                          for c in np.unique(labels)])
    rng = np.random.default_rng(seed)
    boot = per_class[rng.integers(0, len(per_class),
                                  (resamples, len(per_class)))].mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return dict(difference=float(per_class.mean()),
                interval95=[float(low), float(high)])


def paired_gains(hits: Dict[str, np.ndarray], labels: Tensor,
                 baseline: str,
                 modes: Sequence[str]) -> Dict[str, Dict[str, object]]:
    """Each mode's :func:`paired_difference` over ``baseline``.

    Args:
        hits (dict): Mode to (N, ) bool per-sample hits, all of the same
            noise and ``labels``.
        labels (Tensor): (N, ) subclass ids of the samples.
        baseline (str): The mode the others are compared with.
        modes (Sequence[str]): The modes to compare, in order; ``baseline``
            among them is skipped.

    Returns:
        dict: ``'<mode>_vs_<baseline>'`` to that mode's difference.

    Raises:
        KeyError: For a mode or baseline without hits.
    """
    return {
        f'{mode}_vs_{baseline}': paired_difference(hits[mode],
                                                   hits[baseline], labels)
        for mode in modes if mode != baseline
    }
