"""Guidance modes compared on one model: the same labels and noise in every
mode, each mode's samples judged (:class:`judge.SampleJudge`), and the
paired gains over no guidance (:func:`statistics.paired_gains`)."""
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..models.finediffusion import FineDiffusion
from ..models.guidance import TieredGuidance
from ..visualization import to_uint8
from .judge import SampleJudge
from .report import gain_line
from .statistics import paired_gains

# (title, TieredGuidance mode); the last one is the baseline of the gains.
MODES = (('fine-grained CFG', 'fine_grained'), ('standard CFG', 'standard'),
         ('no guidance', 'none'))
# Images of ``labels`` in a guidance mode at a scale, (N, 3, H, W) uint8 RGB,
# from the same noise on every call.
Sampler = Callable[[str, float], Tensor]


def model_sampler(model: FineDiffusion,
                  labels: Tensor,
                  seed: int,
                  batch_size: int,
                  device: Union[str, torch.device] = 'cpu') -> Sampler:
    """A :data:`Sampler` of a FineDiffusion model, by its own sampler and
    number of steps.

    Args:
        model (FineDiffusion): The model, on ``device``.
        labels (Tensor): (N, ) subclass ids to sample.
        seed (int): Seeds the noise of every call alike.
        batch_size (int): Images per ``model.sample`` call.
        device (str or torch.device): Where the model samples. Defaults to
            'cpu'.

    Returns:
        Sampler: (mode, scale) to (N, 3, H, W) uint8 RGB images, on the CPU.
    """
    @torch.no_grad()
    def sample(mode: str, scale: float) -> Tensor:
        """Images of ``labels`` in ``mode`` at ``scale``."""
        generator = torch.Generator(device).manual_seed(seed)
        guidance = TieredGuidance(mode, scale)
        return torch.cat([
            to_uint8(model.sample(batch, guidance=guidance,
                                  generator=generator)).cpu()
            for batch in labels.to(device).split(batch_size)
        ])

    return sample


def compare_modes(
    sample: Sampler,
    judge: SampleJudge,
    labels: Tensor,
    scale: float,
    progress: Optional[Callable[[str, float], None]] = None
) -> Tuple[List[dict], Dict[str, Tensor], Dict[str, dict]]:
    """Samples and judges ``labels`` in each of :data:`MODES`.

    Args:
        sample (Sampler): The model's sampling of ``labels``.
        judge (SampleJudge): Scores the samples.
        labels (Tensor): (N, ) subclass ids.
        scale (float): The guided modes' scale (no guidance: 1).
        progress (callable, optional): Called with each mode's title and
            its sampling seconds.

    Returns:
        tuple: The verdicts (:func:`judge.judged`'s, with ``mode``,
        ``scale`` and ``sample_img_per_s``), the images by mode title, and
        each guided mode's gain over the last mode
        (``'<mode>_vs_none'``).
    """
    results, images, hits = [], {}, {}
    for title, mode in MODES:
        mode_scale = 1.0 if mode == 'none' else scale
        tick = time.time()
        images[title] = sample(mode, mode_scale)
        seconds = time.time() - tick
        verdict = judge(images[title], labels, with_hits=True)
        hits[mode] = verdict.pop('hits')
        results.append(dict(mode=mode, scale=mode_scale,
                            sample_img_per_s=len(labels) / seconds,
                            **verdict))
        if progress:
            progress(title, seconds)
    modes = [mode for _, mode in MODES]
    return results, images, paired_gains(hits, labels, modes[-1], modes)


def gain_lines(gains: Dict[str, dict]) -> List[str]:
    """:func:`report.gain_line` of each gain of :func:`compare_modes`."""
    baseline_title, baseline = MODES[-1]
    return [gain_line(title, baseline_title, gains[f'{mode}_vs_{baseline}'])
            for title, mode in MODES[:-1]]


def sweep_scales(sample: Sampler, judge: SampleJudge, labels: Tensor,
                 scales: Sequence[float]) -> List[dict]:
    """Fine-grained against standard CFG at each scale.

    Args:
        sample (Sampler): The model's sampling of ``labels``.
        judge (SampleJudge): Scores the samples.
        labels (Tensor): (N, ) subclass ids.
        scales (Sequence[float]): Guidance scales.

    Returns:
        list[dict]: Verdicts with ``mode`` and ``scale``, fine-grained and
        standard alternately (:func:`report.sweep_table`'s order).
    """
    return [dict(mode=mode, scale=scale,
                 **judge(sample(mode, scale), labels))
            for scale in scales for mode in ('fine_grained', 'standard')]
