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
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Union

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

    Call arguments (besides ``inputs``: class ids, ``id:N``, subclass or
    superclass names, resolved by :meth:`Taxonomy.resolve`; a superclass
    gives all its subclasses; a class asked for twice is sampled once, at
    its first place):
        per_class (int): Images per class. Defaults to 1.
        batch_size (int): Images per forward. Defaults to 8.
        seed (int): Batch k draws its noise with seed ``seed + k``, as
            ``tools/sample.py``. Defaults to 0.
        guidance (str), guidance_scale (float): The guidance mode
            ('fine_grained', 'standard' or 'none') and scale; default to the
            config's.
        scheduler (dict), num_sampling_steps (int): Default to the config's.
        out_dir (str): When given, ``<out_dir>/<id>_<n>.png`` and a labelled
            ``grid.png`` (a row per class) are written; it must be a new or
            empty folder, so that no earlier output is overwritten.

    Returns (``__call__``):
        dict: ``predictions``, one dict per image (``label``, ``class_name``,
        ``img``: (H, W, 3) uint8 RGB), and ``visualization``: the grid as an
        (H, W, 3) uint8 RGB array in a one-element list. With
        ``return_datasamples=True``, ``predictions`` holds DataSamples
        (``fake_img`` (3, H, W) uint8 RGB, ``gt_label``).

    Raises:
        ValueError: For no classes, an unknown class name (naming the
            closest ones), an id outside the class table, a ``per_class``
            or ``batch_size`` that is not a positive int, or unusable
            weights (naming the file).
        FileNotFoundError: For a missing config or weights file.
        FileExistsError: For an ``out_dir`` that holds files.
    """
    preprocess_kwargs = {'per_class'}
    forward_kwargs = {
        'seed', 'guidance', 'guidance_scale', 'scheduler',
        'num_sampling_steps'
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
                   per_class: int = 1) -> Iterable[torch.Tensor]:
        """Batches of subclass ids, (<= batch_size, ), ``per_class``
        consecutive copies of each class in the order asked."""
        for name, value in (('per_class', per_class),
                            ('batch_size', batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}')
        if not inputs:
            raise ValueError('no classes given: pass class ids or names')
        classes: List[int] = []
        for query in inputs:
            for sub in self.taxonomy.resolve(str(query)):
                if sub not in classes:
                    classes.append(sub)
        self.classes = classes
        labels = torch.tensor(classes).repeat_interleave(per_class)
        return labels.split(batch_size)

    def __call__(self, inputs, return_datasamples: bool = False,
                 batch_size: int = 8, **kwargs) -> dict:
        out_dir = kwargs.get('out_dir')
        if out_dir and osp.isdir(out_dir) and os.listdir(out_dir):
            raise FileExistsError(
                f'out_dir {out_dir} already holds files; give a new or '
                'empty folder (nothing there is overwritten)')
        self._batch = 0
        return super().__call__(inputs, return_datasamples, batch_size,
                                **kwargs)

    @torch.no_grad()
    def forward(self, labels: torch.Tensor, seed: int = 0,
                guidance: Optional[str] = None,
                guidance_scale: Optional[float] = None,
                scheduler: Optional[dict] = None,
                num_sampling_steps: Optional[int] = None) -> List[DataSample]:
        """One DataSample per label: ``fake_img`` (3, H, W) uint8 RGB."""
        device = self.model.data_preprocessor.device
        generator = torch.Generator(device).manual_seed(seed + self._batch)
        self._batch += 1
        mode = guidance or self.model.guidance.mode
        images = self.model.sample(
            labels.to(device), num_sampling_steps,
            TieredGuidance(mode, self.model.guidance.scale),
            guidance_scale=guidance_scale, scheduler=scheduler,
            generator=generator)
        samples = []
        for image, label in zip(to_uint8(images).cpu(), labels):
            sample = DataSample(fake_img=image)
            sample.set_gt_label(int(label))
            samples.append(sample)
        return samples

    def visualize(self, inputs: list, preds: List[DataSample],
                  out_dir: Optional[str] = None) -> List[np.ndarray]:
        """The labelled grid (a row per class); with ``out_dir``, the grid
        and every image as PNG files."""
        rows = rows_of_classes(torch.stack([p.fake_img for p in preds]),
                               len(self.classes))
        grid = grid_of_rows(rows, self.classes, self.taxonomy)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for sub, row in zip(self.classes, rows):
                for n, image in enumerate(row):
                    _save(image, osp.join(out_dir, f'{sub}_{n}.png'))
            grid.save(osp.join(out_dir, 'grid.png'))
        return [np.asarray(grid)]

    def postprocess(self, preds: List[DataSample],
                    visualization: List[np.ndarray],
                    return_datasamples: bool = False) -> Dict[str, list]:
        if return_datasamples:
            return dict(predictions=preds, visualization=visualization)
        names = self.taxonomy.names
        predictions = [
            dict(label=int(p.gt_label.label), class_name=names[int(
                p.gt_label.label)], img=p.fake_img.permute(1, 2, 0).numpy())
            for p in preds
        ]
        return dict(predictions=predictions, visualization=visualization)


def _save(image: np.ndarray, path: str) -> None:
    from PIL import Image
    Image.fromarray(image).save(path)
