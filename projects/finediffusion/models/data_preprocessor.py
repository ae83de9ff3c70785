"""MMagic's data preprocessor with a declared channel order and fast paths
for training batches of labelled images and of cached latents."""
from typing import List, Optional, Union

import torch
from torch import Tensor

from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.registry import MODELS
from mmagic.structures import DataSample

CHANNEL_ORDERS = ('RGB', 'BGR')
# The fields of a latent-cache sample (LoadLatent), packed as its inputs.
LATENT_KEYS = ('latent_mean', 'latent_std')


@MODELS.register_module(name=['DiTDataPreprocessor', 'TieredDataPreprocessor'])
class DiTDataPreprocessor(DataPreprocessor):
    """Hands images to the model in one declared channel order, and its
    images back to MMagic in BGR.

    Channel orders meet in three places, and this class is where they agree:

    - **Loader to model.** Loaders record the order they produce in the
      metainfo ``<key>_channel_order`` (``LoadRGBImage``: 'rgb';
      MMagic's ``LoadImageFromFile``: 'bgr', as OpenCV reads). Training
      images are converted from it to ``output_channel_order``, the order
      the model takes. MMagic reads the order of the model inputs from
      ``img_channel_order`` only; our pipelines pack ``gt`` as the inputs
      (``PackInputs(keys='gt')``), so ``gt_channel_order`` is read when
      ``img_channel_order`` is absent (MMagic would take such images as
      BGR, whatever the loader).
    - **Model to MMagic.** :meth:`destruct` takes the model's images (its
      inputs and what it generates) as ``output_channel_order`` and returns
      them in BGR, the order MMagic's generation metrics (FID flips BGR to
      RGB for Inception), visualizers and our metrics read ``fake_img`` in.
      MMagic finds that order in the metainfo ``img_output_channel_order``,
      which a generation request (labels, no image) does not carry, and
      then assumes BGR.
    - **Real images for metrics.** At test time MMagic's parent class
      converts ``gt_img`` to BGR from its ``gt_channel_order``, so real and
      generated images reach the metrics in the same order.

    MMagic's ``DataPreprocessor`` also moves every ``DataSample`` of the
    batch to the device and stacks them field by field, deep-copying each
    tensor: on a GPU that is about 0.2 s of the main process per 256 images,
    which capped the demo's DiT-S at under 1,000 img/s. Diffusion training
    reads the images (or cached latents) and the class labels only, so two
    kinds of batch take a fast path:

    - a training batch of stacked uint8 images (``default_collate`` or
      ``stack_collate``): the images are converted and normalized as the
      parent does, and the data samples become one ``DataSample`` holding
      the batch's ``gt_label``;
    - a batch of latent-cache posteriors, in any mode: inputs holding
      ``latent_mean`` and ``latent_std`` (a dict of stacked tensors from
      ``stack_collate`` or ``default_collate``, or of lists of tensors from
      ``pseudo_collate``). Both go to the device once, stacked, without
      normalization (pinned memory, when the loader pins, copies
      asynchronously); the model gets ``inputs=None`` and one
      ``DataSample`` with ``gt_label`` (B, ), ``latent_mean`` and
      ``latent_std`` (B, C, h, w), in the dtype the cache stores, and the
      data samples' metainfo as lists (``sample_idx``, ``latent_path``,
      ``latent_row``: what ``FineDiffusion.nonfinite_report`` names).

    Anything else (test batches, lists of images) goes through the parent.

    Args:
        output_channel_order (str): The order of the model's images, 'RGB'
            or 'BGR'. Defaults to 'RGB', the order DiT and the SD-VAE were
            trained in.
        **kwargs: Passed to MMagic's ``DataPreprocessor`` (``mean``,
            ``std``, ...).

    Raises:
        ValueError: If ``output_channel_order`` is not 'RGB' or 'BGR' (None
            would leave the model's order to whichever loader a config
            uses, and its outputs would be taken as BGR).
    """

    def __init__(self, output_channel_order: str = 'RGB', **kwargs) -> None:
        if output_channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                "DiTDataPreprocessor: output_channel_order must be 'RGB' "
                f"or 'BGR' (the model's channel order), got "
                f'{output_channel_order!r}')
        super().__init__(output_channel_order=output_channel_order, **kwargs)

    def _parse_channel_order(self,
                             key: str,
                             inputs: Tensor,
                             data_sample: Optional[DataSample] = None) -> str:
        """The channel order of field ``key``: see the class docstring."""
        if key == 'img_output':
            # The model's own images, generated or preprocessed.
            return self.output_channel_order
        if (key == 'img' and data_sample is not None
                and 'img_channel_order' not in data_sample.metainfo
                and 'gt_channel_order' in data_sample.metainfo):
            # Model inputs packed from the 'gt' key of our pipelines.
            key = 'gt_img'
        return super()._parse_channel_order(key, inputs, data_sample)

    def forward(self, data: dict, training: bool = False) -> dict:
        """See :meth:`DataPreprocessor.forward` and the class docstring."""
        inputs = data.get('inputs')
        samples = data.get('data_samples')
        if _holds_latents(inputs):
            return self._latent_batch(inputs, samples)
        stacked = isinstance(samples, DataSample)
        fast = (training and isinstance(inputs, Tensor)
                and inputs.dtype == torch.uint8 and inputs.ndim == 4
                and (stacked or (isinstance(samples, list)
                                 and len(samples) == len(inputs)))
                and 'gt_label' in (samples if stacked else samples[0]))
        if not fast:
            return super().forward(data, training)
        if stacked:
            # MMagic reads the order of a stacked sample from its lists.
            order = self._parse_channel_order('img', inputs[0], samples)
            labels = samples.gt_label.label.reshape(-1)
        else:
            order = self._parse_batch_channel_order('img', inputs, samples)
            labels = torch.cat([s.gt_label.label.reshape(-1)
                                for s in samples])
        images = inputs.to(self.device, non_blocking=True).float()
        images, _ = self._do_conversion(images, order,
                                        self.output_channel_order)
        batch = DataSample()
        batch.set_gt_label(labels.to(self.device, non_blocking=True))
        return dict(inputs=self._do_norm(images), data_samples=batch)

    def _latent_batch(self, inputs: dict,
                      samples: Union[DataSample, List[DataSample]]) -> dict:
        """A batch of latent-cache posteriors on the device, as the class
        docstring says."""
        if not isinstance(samples, DataSample):
            samples = DataSample.stack(samples)
        batch = DataSample(metainfo=samples.metainfo)
        batch.set_gt_label(samples.gt_label.label.reshape(-1).to(
            self.device, non_blocking=True))
        for key in LATENT_KEYS:
            value = inputs[key]
            if isinstance(value, (list, tuple)):  # pseudo_collate's
                value = torch.stack(value)
            batch.set_field(value.to(self.device, non_blocking=True), key)
        return dict(inputs=None, data_samples=batch)


def _holds_latents(inputs) -> bool:
    """Whether a batch's inputs are latent-cache posteriors: a dict with
    ``latent_mean``, of stacked tensors or of one tensor per sample."""
    return isinstance(inputs, dict) and LATENT_KEYS[0] in inputs


# The earlier name (also registered), for code that imports it.
TieredDataPreprocessor = DiTDataPreprocessor
