# Stage 1 of the demo (tools/demo.py): a small TieredDiT trained fully, in
# pixel space, on the synthetic base taxonomy (12 shape families x 5 hue
# ranges). It stands in for DiT's ImageNet pretraining: like the official
# DiT it has plain LayerNorms, and a null row for standard CFG.
_base_ = ['../_base_/default_runtime.py']

data_root = 'data/synthetic/base/train'
taxonomy = dict(type='HierarchyDataset', data_root=data_root)

model = dict(
    type='FineDiffusion',
    backbone=dict(
        type='TieredDiT',
        taxonomy=taxonomy,
        arch=dict(depth=4, hidden_size=128, num_heads=4),
        patch_size=4,
        input_size=32,
        in_channels=3,
        affine_norms=False,
        super_prob=0.1,
        null_prob=0.1,
        # DiT's 0.02 class table needs hundreds of thousands of steps to
        # matter next to the timestep embedding; this run has a few
        # thousand.
        class_init_std=1.0),
    trainable='full',
    # Min-SNR weighting (gamma 1): a run of minutes spends its updates on
    # the noisy steps, where the class decides the image. In a GPU sweep of
    # this demo's budget it doubled the judged class accuracy of samples.
    diffusion=dict(type='DiTDiffusion', snr_gamma=1.0),
    # A short run: the EMA must forget the random init within it.
    ema_decay=0.99,
    scheduler=dict(type='DPMSolverMultistepScheduler'),
    num_sampling_steps=20,
    data_preprocessor=dict(type='DiTDataPreprocessor'))

train_pipeline = [
    dict(type='LoadRGBImage', key='gt'),
    dict(type='PackInputs', keys='gt'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    # Stacked in the workers: one shared-memory tensor per batch instead of
    # one per image, which made the main process the bottleneck on a GPU.
    collate_fn=dict(type='default_collate'),
    dataset=dict(**taxonomy, pipeline=train_pipeline))
# The entries above that copy a shared spec, and what they copied: tools
# carry a later change of the spec (a child config, --cfg-options) into
# them (finediffusion.config.apply_copied_specs).
copied_specs = {
    'taxonomy.data_root': dict(spec='data_root', value=data_root),
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value=train_pipeline),
}

train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=600)
optim_wrapper = dict(
    constructor='PEFTOptimWrapperConstructor',
    # beta2 0.99 (not 0.999): second moments that follow a run of a few
    # thousand steps. In GPU sweeps of the demo's budget it raised the
    # judged subclass accuracy of unguided samples by 2-5 points.
    optimizer=dict(type='AdamW', lr=4e-3, betas=(0.9, 0.99),
                   weight_decay=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
]
custom_hooks = [
    dict(type='PEFTCheckpointHook'),
    dict(type='TrainableEMAHook'),
]
env_cfg = dict(cudnn_benchmark=False)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=100000, max_keep_ckpts=1, save_last=True))
log_processor = dict(window_size=50)
