"""FineDiffusion behind MMEngine's ``BaseInferencer``, as MMagic's
inferencers are: class names or ids in, images and a labelled grid out.

MMagic's ``MMagicInferencer`` picks its inferencer from a fixed list of
tasks and model names (``mmagic/apis/inferencers/__init__.py``) and takes no
plugin; use this class directly::

    from finediffusion.inferencer import FineDiffusionInferencer
    inferencer = FineDiffusionInferencer('configs/finediffusion_inat.py',
                                         'work_dirs/inat/iter_240000.pth')
    results = inferencer(['Danaus plexippus', 'Nymphalidae'], per_class=4,
                         out_dir='work_dirs/samples')
"""
import itertools
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.infer import BaseInferencer

from mmagic.structures import DataSample
from .config import load_config
from .inference import load_for_sampling
from .models import TieredGuidance
from .visualization import grid_of_rows, rows_of_classes, to_uint8

ClassQuery = Union[str, int]


class FineDiffusionInferencer(BaseInferencer):
    """Generates images of the classes asked for by name or id.

    Args:
        model (str): The training config (what ``tools/sample.py`` takes).
        weights (str): A ``.safetensors`` delta or a ``.pth`` checkpoint of
            a training run (PEFT-trimmed or full), as ``tools/sample.py``.
        base (str, optional): The official DiT checkpoint; defaults to the
            config's ``model.backbone.pretrained``.
        device (str, optional): Defaults to CUDA when available.
        scope (str): The registry scope. Defaults to 'mmagic'.

    Call arguments (besides ``inputs``: class ids, ``id:N``, subclass names,
    names at any rank or ``<rank>:<name>``, resolved by
    :meth:`Taxonomy.targets`: a superclass gives all its subclasses, an
    ancestor below it is drawn from its own row; a class asked for twice is
    sampled once, at its first place):
        per_class (int): Images per class. Defaults to 1.
        batch_size (int): Images per forward. Defaults to 8.
        seed (int): Batch k draws its noise with seed ``seed + k``, as
            ``tools/sample.py``. Defaults to 0.
        guidance (str), guidance_scale (float): The guidance mode (one of
            :data:`~finediffusion.models.guidance.MODES`) and scale; default
            to the config's.
        reference (str), references (list[str]), scales (list[float]): The
            reference rank of 'fine_grained' mode, and the ranks (coarse to
            fine) and scales of 'hierarchical' mode (see
            :class:`TieredGuidance`); default to the config's when its mode
            is the one asked for.
        scheduler (dict), num_sampling_steps (int): Default to the config's.
        out_dir (str): When given, ``<out_dir>/<id>_<n>.png`` (an
            ancestor's row: ``<rank>_<ancestor id>_<n>.png``) and a labelled
            ``grid.png`` (a row per class) are written; it must be a new or
            empty folder, so that no earlier output is overwritten.

    Returns (``__call__``):
        dict: ``predictions``, one dict per image (``label``, ``class_name``
        (the row's label for an ancestor's row), ``rank`` ('sub' or the
        ancestor's rank), ``img``: (H, W, 3) uint8 RGB), and ``visualization``: the grid as an
        (H, W, 3) uint8 RGB array in a one-element list. With
        ``return_datasamples=True``, ``predictions`` holds DataSamples
        (``fake_img`` (3, H, W) uint8 RGB, ``gt_label``).

    Raises:
        ValueError: For no classes, an unknown class name (naming the
            closest ones), an id outside the class table, a guidance the
            model cannot apply to a class's rank, a ``per_class``
            or ``batch_size`` that is not a positive int, or unusable
            weights (naming the file).
        FileNotFoundError: For a missing config or weights file.
        FileExistsError: For an ``out_dir`` that holds files.
    """
    preprocess_kwargs = {'per_class'}
    forward_kwargs = {
        'seed', 'guidance', 'guidance_scale', 'reference', 'references',
        'scales', 'scheduler', 'num_sampling_steps'
    }
    visualize_kwargs = {'out_dir'}
    postprocess_kwargs: set = set()

    def __init__(self,
                 model: str,
                 weights: str,
                 base: Optional[str] = None,
                 device: Optional[str] = None,
                 scope: str = 'mmagic') -> None:
        self.base = base
        device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        super().__init__(load_config(model), weights, device, scope,
                         show_progress=False)

    def _init_model(self, cfg, weights: str, device: str) -> torch.nn.Module:
        model, self.taxonomy = load_for_sampling(cfg, weights, self.base,
                                                 device)
        return model

    def _init_pipeline(self, cfg) -> None:
        return None

    def _init_collate(self, cfg) -> None:
        return None

    def _init_visualizer(self, cfg) -> None:
        return None

    def _inputs_to_list(self, inputs) -> list:
        # Not BaseInferencer's: a class name is never a folder of files.
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    def preprocess(self, inputs: List[ClassQuery], batch_size: int = 8,
                   per_class: int = 1) -> Iterable[Tuple[torch.Tensor, str]]:
        """Batches of (subclass ids (<= batch_size, ), rank), ``per_class``
        consecutive copies of each target in the order asked, a batch
        holding one rank."""
        for name, value in (('per_class', per_class),
                            ('batch_size', batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}')
        if not inputs:
            raise ValueError('no classes given: pass class ids or names')
        targets: List[Tuple[int, str]] = []
        for query in inputs:
            targets.extend(t for t in self.taxonomy.targets(str(query))
                           if t not in targets)
        self.targets = targets
        for rank, group in itertools.groupby(targets, key=lambda t: t[1]):
            labels = torch.tensor([sub for sub, _ in group])
            for chunk in labels.repeat_interleave(per_class).split(
                    batch_size):
                yield chunk, rank

    def __call__(self, inputs, return_datasamples: bool = False,
                 batch_size: int = 8, **kwargs) -> dict:
        out_dir = kwargs.get('out_dir')
        if out_dir and osp.isdir(out_dir) and os.listdir(out_dir):
            raise FileExistsError(
                f'out_dir {out_dir} already holds files; give a new or '
                'empty folder (nothing there is overwritten)')
        self._batch = 0
        self._guidance = self._guidance_of(**{
            k: kwargs[k]
            for k in ('guidance', 'reference', 'references', 'scales')
            if k in kwargs
        })
        # The whole request is checked before the first image is drawn.
        for _, rank in self.preprocess(list(inputs) if isinstance(
                inputs, (list, tuple)) else [inputs], batch_size,
                                       kwargs.get('per_class', 1)):
            self._guidance.check(self.model.backbone, rank)
        return super().__call__(inputs, return_datasamples, batch_size,
                                **kwargs)

    def _guidance_of(self,
                     guidance: Optional[str] = None,
                     reference: Optional[str] = None,
                     references: Sequence[str] = (),
                     scales: Sequence[float] = ()) -> TieredGuidance:
        """The guidance of a call: the config's, with the mode and ranks
        the call names; the config's ranks stay when the mode does."""
        own = self.model.guidance
        mode = guidance or own.mode
        if mode == own.mode:
            reference = reference or (own.reference
                                      if mode == 'fine_grained' else None)
            references = references or own.references
            scales = scales or own.scales
        return TieredGuidance(mode, own.scale, reference=reference,
                              references=references, scales=scales)

    @torch.no_grad()
    def forward(self, batch: Tuple[torch.Tensor, str], seed: int = 0,
                guidance: Optional[str] = None,
                guidance_scale: Optional[float] = None,
                reference: Optional[str] = None,
                references: Sequence[str] = (),
                scales: Sequence[float] = (),
                scheduler: Optional[dict] = None,
                num_sampling_steps: Optional[int] = None) -> List[DataSample]:
        """One DataSample per label: ``fake_img`` (3, H, W) uint8 RGB,
        ``gt_label`` and ``rank``; the guidance is the call's (see
        :meth:`__call__`)."""
        labels, rank = batch
        device = self.model.data_preprocessor.device
        generator = torch.Generator(device).manual_seed(seed + self._batch)
        self._batch += 1
        images = self.model.sample(labels.to(device), num_sampling_steps,
                                   self._guidance,
                                   guidance_scale=guidance_scale,
                                   scheduler=scheduler, generator=generator,
                                   rank=rank)
        samples = []
        for image, label in zip(to_uint8(images).cpu(), labels):
            sample = DataSample(fake_img=image, rank=rank)
            sample.set_gt_label(int(label))
            samples.append(sample)
        return samples

    def visualize(self, inputs: list, preds: List[DataSample],
                  out_dir: Optional[str] = None) -> List[np.ndarray]:
        """The labelled grid (a row per class); with ``out_dir``, the grid
        and every image as PNG files."""
        rows = rows_of_classes(torch.stack([p.fake_img for p in preds]),
                               len(self.targets))
        grid = grid_of_rows(rows, self.targets, self.taxonomy)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for (sub, rank), row in zip(self.targets, rows):
                stem = (str(sub) if rank == 'sub' else
                        f'{rank}_{self.taxonomy.table(rank)[sub]}')
                for n, image in enumerate(row):
                    _save(image, osp.join(out_dir, f'{stem}_{n}.png'))
            grid.save(osp.join(out_dir, 'grid.png'))
        return [np.asarray(grid)]

    def postprocess(self, preds: List[DataSample],
                    visualization: List[np.ndarray],
                    return_datasamples: bool = False) -> Dict[str, list]:
        if return_datasamples:
            return dict(predictions=preds, visualization=visualization)
        predictions = []
        for p in preds:
            sub = int(p.gt_label.label)
            name = (self.taxonomy.names[sub] if p.rank == 'sub' else
                    self.taxonomy.rank_label(p.rank, sub))
            predictions.append(
                dict(label=sub, class_name=name, rank=p.rank,
                     img=p.fake_img.permute(1, 2, 0).numpy()))
        return dict(predictions=predictions, visualization=visualization)


def _save(image: np.ndarray, path: str) -> None:
    from PIL import Image
    Image.fromarray(image).save(path)
