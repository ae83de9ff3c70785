"""What a DiT-XL/2 PEFT checkpoint holds, and its size, as the users'
command writes it.

Runs ``tools/train.py configs/finediffusion_inat.py`` for one iteration
(batch 1) on a tiny synthetic dataset in the iNat 2021 format (10,000
species in 11 supercategories: 10,011 class rows), with random DiT-XL/2
weights in the official layout and a tiny random diffusers AutoencoderKL
that turns 64-px crops into 32 x 32 x 4 latents (DiT-XL/2-256's latent
size), since neither the weights nor the data can be downloaded here. Runs
on the CPU in a few minutes (about 6 GB of memory).

Prints one JSON object: the state-dict keys counted by kind, the other
top-level entries, the bytes of each part and of ``iter_1.pth``; the full
key list goes to ROOT/iter_1_keys.json. Recorded output:
benchmarks/peft_checkpoint_2026-11-30.json (key list:
benchmarks/peft_checkpoint_keys_dit_xl_2.json).

Example:
    python benchmarks/peft_checkpoint_size.py --root /tmp/peft_checkpoint
"""
import argparse
import gc
import json
import os
import os.path as osp
import subprocess
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

from finediffusion.stand_ins import write_inat

TAXONOMY_KEY = 'backbone.y_embedder.sub2super'


def write_weights(root: str) -> None:
    """Random DiT-XL-2-256 in the official layout (its 1,001-row ImageNet
    table) and a tiny random VAE folder, downsampling by 2."""
    from diffusers import AutoencoderKL

    import finediffusion  # noqa: F401  (compatibility fixes first)
    from finediffusion.models import TieredDiT
    dit = TieredDiT(num_classes=1000, taxonomy=[0] * 1000, arch='XL',
                    affine_norms=False)
    torch.save({k: v for k, v in dit.state_dict().items()
                if k != 'y_embedder.sub2super'},
               osp.join(root, 'DiT-XL-2-256x256.pt'))
    del dit
    gc.collect()
    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 2,
        up_block_types=('UpDecoderBlock2D', ) * 2,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=64).save_pretrained(osp.join(root, 'vae'))


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested structure."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='/tmp/peft_checkpoint')
    args = parser.parse_args()
    root = osp.abspath(args.root)
    data, work = osp.join(root, 'inat'), osp.join(root, 'work')
    os.makedirs(root, exist_ok=True)
    write_inat(data, num_images=4)
    write_weights(root)
    command = [
        'tools/train.py', 'configs/finediffusion_inat.py', '--work-dir', work,
        '--cfg-options',
        f'model.backbone.pretrained={root}/DiT-XL-2-256x256.pt',
        f'model.vae.from_pretrained={root}/vae',
        f'model.backbone.taxonomy.data_root={data}',
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.dataset.pipeline.1.size=64',
        'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'train_cfg.max_iters=1',
        'default_hooks.checkpoint.interval=1', 'val_cfg=None',
        'val_dataloader=None', 'val_evaluator=None'
    ]
    with open(osp.join(root, 'train.log'), 'w') as log:
        code = subprocess.call([sys.executable, *command], cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT)
    if code:
        with open(osp.join(root, 'train.log')) as log:
            print(log.read()[-4000:])
        raise SystemExit(f'tools/train.py failed ({code})')

    import finediffusion  # noqa: F401  (weights_only loads MMEngine's types)
    path = osp.join(work, 'iter_1.pth')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    state = ckpt['state_dict']
    trainable = ckpt['meta']['peft']['trainable']
    kinds = dict(
        trainable=[k for k in state if k.startswith('backbone.')
                   and k[len('backbone.'):] in trainable],
        ema=[k for k in state if k.startswith('ema.')],
        taxonomy=[k for k in state if k == TAXONOMY_KEY])
    kinds['other'] = sorted(set(state) - set().union(*kinds.values()))
    with open(osp.join(root, 'iter_1_keys.json'), 'w') as f:
        json.dump(sorted(state), f, indent=0)
    params = sum(state[k].numel() for k in kinds['trainable'])
    print(json.dumps(dict(
        command=' '.join(['python', *command]),
        checkpoint=path,
        file_bytes=osp.getsize(path),
        top_level=sorted(ckpt),
        meta=sorted(ckpt['meta']),
        state_dict_keys=len(state),
        keys_by_kind={k: len(v) for k, v in kinds.items()},
        other_keys=kinds['other'],
        trainable_parameters=params,
        class_table=list(state['backbone.y_embedder.embedding_table.weight']
                         .shape),
        state_dict_bytes=tensor_bytes(state),
        optimizer_states=len(ckpt['optimizer']['state']),
        optimizer_bytes=tensor_bytes(ckpt['optimizer']),
        key_list=osp.join(root, 'iter_1_keys.json')), indent=1))


if __name__ == '__main__':
    main()
