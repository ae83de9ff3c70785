# MMagic's conditional SNGAN (projection discriminator, Miyato & Koyama 2018)
# trained on FineDiffusion's synthetic hierarchy through our HierarchyDataset:
# MMagic's model config is inherited as MMagic ships it (`mmagic::`), only
# the data, the widths and the schedule are ours. `make demo` writes the data.
# Train: python tools/train.py configs/mmagic/sngan_proj_synthetic.py
_base_ = [
    'mmagic::_base_/models/sngan_proj/base_sngan_proj_32x32.py',
    '../_base_/default_runtime.py'
]

data_root = 'data/synthetic/fine/train'
num_classes = 100  # the synthetic 'fine' taxonomy's species

model = dict(
    num_classes=num_classes,
    generator=dict(base_channels=64),
    discriminator=dict(base_channels=32),
    # One discriminator step per generator step (MMagic's config: 5): the
    # synthetic images are simple enough, and a CPU run stays short.
    discriminator_steps=1)

train_dataloader = dict(
    batch_size=16,
    num_workers=0,  # 32 px PNGs: loading in the main process is fast enough
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='HierarchyDataset',
        data_root=data_root,
        pipeline=[
            dict(type='LoadImageFromFile', key='gt'),
            dict(type='Flip', keys=['gt'], direction='horizontal'),
            dict(type='PackInputs'),
        ]))

# betas as MMagic's GAN configs write them, with an int 0 (finediffusion.compat
# makes them floats for current torch).
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    generator=dict(optimizer=dict(type='Adam', lr=2e-4, betas=(0, 0.999))),
    discriminator=dict(optimizer=dict(type='Adam', lr=2e-4, betas=(0, 0.999))))
train_cfg = dict(by_epoch=False, max_iters=2000)

# A CPU recipe, as the tiny FineDiffusion config: gloo for dist_train.sh on CPUs.
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500))
# The entries above that copy a shared value (finediffusion.config):
# --cfg-options data_root=... reaches the dataset.
copied_specs = {
    'train_dataloader.dataset.data_root':
    dict(spec='data_root', value=data_root),
}
