"""Float8 matrix products for the frozen linear layers of a DiT backbone,
with torchao's ``Float8Linear`` (an optional dependency)."""
from typing import List, Sequence

import torch
from torch import nn

# The linear layers applied to every token (B * T rows): the bulk of
# DiT-XL/2's matrix products. adaLN and the embedders act on one row per
# image, too few for float8 to pay for its casts.
TOKEN_LINEARS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


def convert_frozen_linears(backbone: nn.Module,
                           layers: Sequence[str] = TOKEN_LINEARS
                           ) -> List[str]:
    """Swaps the frozen ``nn.Linear`` layers whose names end in one of
    ``layers`` for torchao's ``Float8Linear`` with its default recipe
    (tensorwise dynamic scaling: inputs and weights in e4m3, output
    gradients in e5m2, products accumulated in float32). The parameters stay
    the same tensors under the same names, so optimizers, EMA and
    checkpoints are unaffected; trainable layers (full fine-tuning) keep
    their precision.

    Args:
        backbone (nn.Module): On a CUDA device with float8 matrix units
            (compute capability 8.9 or higher: Ada, Hopper and later).
        layers (Sequence[str]): Name suffixes of the layers to convert.

    Returns:
        list[str]: The names of the converted layers.

    Raises:
        ImportError: If torchao is not installed.
        RuntimeError: If the backbone is not on such a GPU.
    """
    device = next(backbone.parameters()).device
    if (device.type != 'cuda'
            or torch.cuda.get_device_capability(device) < (8, 9)):
        name = (torch.cuda.get_device_name(device)
                if device.type == 'cuda' else device.type)
        raise RuntimeError(
            f'float8=True needs a GPU with float8 matrix units (compute '
            f'capability 8.9 or higher), the backbone is on {name}')
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as error:
        raise ImportError(
            'float8=True needs torchao (pip install torchao)') from error
    converted = []

    def frozen(module: nn.Module, name: str) -> bool:
        # float8 GEMMs need both dimensions divisible by 16.
        chosen = (isinstance(module, nn.Linear)
                  and not module.weight.requires_grad
                  and name.endswith(tuple(layers))
                  and module.in_features % 16 == 0
                  and module.out_features % 16 == 0)
        if chosen:
            converted.append(name)
        return chosen

    convert_to_float8_training(backbone, module_filter_fn=frozen)
    return converted
