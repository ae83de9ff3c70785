# The smallest real FineDiffusion run: a 2-block TieredDiT in pixel space on
# the toy hierarchy (tools/make_toy_data.py), a few seconds on a laptop CPU.
# It trains from scratch, so every parameter trains ('full'); the PEFT
# configs start from a pretrained DiT instead.
_base_ = ['./_base_/default_runtime.py']

data_root = 'data/toy_hierarchy'
# Subclass folders sort as 00_square_00, 00_square_01, 01_disc_00, ...
taxonomy = [0, 0, 1, 1]

model = dict(
    type='FineDiffusion',
    backbone=dict(
        type='TieredDiT',
        num_classes=len(taxonomy),
        taxonomy=taxonomy,
        arch=dict(depth=2, hidden_size=64, num_heads=4),
        patch_size=4,
        input_size=16,
        in_channels=3),
    trainable='full',
    ema_decay=0.999,
    num_sampling_steps=25,
    data_preprocessor=dict(type='DiTDataPreprocessor'))

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='Flip', keys=['gt'], direction='horizontal'),
    dict(type='PackInputs', keys='gt'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    dataset=dict(
        type='BasicConditionalDataset',
        data_root=data_root,
        pipeline=train_pipeline))
# The entries above that copy a shared value, and what they copied: tools
# carry a later change of it (a child config, --cfg-options) into them
# (finediffusion.config.apply_copied_specs). num_classes, derived from
# taxonomy, is not a copy: the model refuses a table of another length.
copied_specs = {
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset.data_root':
    dict(spec='data_root', value=data_root),
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value=train_pipeline),
}

train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=40)
optim_wrapper = dict(
    constructor='PEFTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.))
custom_hooks = [
    dict(type='PEFTCheckpointHook'),
    dict(type='TrainableEMAHook'),
    dict(type='ResumeRandomStateHook'),
]

env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=20))
log_processor = dict(window_size=10)
