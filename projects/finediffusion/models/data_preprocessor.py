"""MMagic's data preprocessor with a fast training path for labelled images."""
from typing import Optional

import torch
from torch import Tensor

from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.registry import MODELS
from mmagic.structures import DataSample


@MODELS.register_module()
class TieredDataPreprocessor(DataPreprocessor):
    """Normalizes a training batch of images and keeps only their labels.

    MMagic's ``DataPreprocessor`` moves every ``DataSample`` of the batch to
    the device and stacks them field by field, deep-copying each tensor: on
    a GPU that is about 0.2 s of the main process per 256 images, which
    capped the demo's DiT-S at under 1,000 img/s. Diffusion training reads
    the images and the class labels only, so a training batch of stacked
    uint8 images (``default_collate``) takes this path when no channel
    conversion is configured: the images are normalized as the parent does,
    and the data samples become one ``DataSample`` holding the batch's
    ``gt_label``. Anything else (test batches, latent caches, lists of
    images) goes through the parent.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        """See :meth:`DataPreprocessor.forward`."""
        inputs: Optional[Tensor] = data.get('inputs')
        samples = data.get('data_samples')
        fast = (training and isinstance(inputs, Tensor)
                and inputs.dtype == torch.uint8 and inputs.ndim == 4
                and isinstance(samples, list) and len(samples) == len(inputs)
                and 'gt_label' in samples[0]
                # No channel conversion asked for: the images pass as read.
                and self.output_channel_order is None)
        if not fast:
            return super().forward(data, training)
        images = inputs.to(self.device, non_blocking=True).float()
        labels = torch.cat([s.gt_label.label.reshape(-1) for s in samples])
        batch = DataSample()
        batch.set_gt_label(labels.to(self.device, non_blocking=True))
        return dict(inputs=self._do_norm(images), data_samples=batch)
