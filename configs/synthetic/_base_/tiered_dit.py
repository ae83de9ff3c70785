# The demo's pixel-space TieredDiT and its training loop (tools/demo.py),
# shared by its pretraining (configs/synthetic/pretrain_base.py) and its
# fine-tuning (configs/finediffusion_synthetic.py), which add the taxonomy,
# the trainable weights and the stage's budget. The model size is the CPU
# scale's. It sets no runtime keys, so that those configs list it beside
# _base_/default_runtime.py and their GPU variants (configs/synthetic/gpu/)
# stay within three levels of inheritance.
model = dict(
    type='FineDiffusion',
    backbone=dict(
        type='TieredDiT',
        arch=dict(depth=4, hidden_size=128, num_heads=4),
        patch_size=4,
        input_size=32,
        in_channels=3,
        super_prob=0.1,
        null_prob=0.1),
    # Min-SNR weighting (gamma 1): a run of minutes spends its updates on
    # the noisy steps, where the class decides the image.
    diffusion=dict(type='DiTDiffusion', snr_gamma=1.0),
    # The demo's sampling: 8 DPM-Solver++ steps judge as well as 20, and the
    # time they save goes to training and samples.
    scheduler=dict(type='DPMSolverMultistepScheduler'),
    num_sampling_steps=8,
    data_preprocessor=dict(type='DiTDataPreprocessor'))

train_pipeline = [
    dict(type='LoadRGBImage', key='gt'),
    dict(type='PackInputs', keys='gt'),
]
train_dataloader = dict(
    batch_size=32,
    # Loading in the main process: at this image size, worker processes
    # deliver fewer images per second than the main process alone, on a
    # GPU too (docs/experiments.md).
    num_workers=0,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    # Stacked in the workers: one shared-memory tensor per batch instead of
    # one per image, which made the main process the bottleneck on a GPU.
    collate_fn=dict(type='default_collate'))

train_cfg = dict(type='ResumableIterBasedTrainLoop')
optim_wrapper = dict(
    constructor='PEFTOptimWrapperConstructor',
    # beta2 0.99 (not 0.999): second moments that follow a run of a few
    # thousand steps; it raised the judged subclass accuracy of unguided
    # samples.
    optimizer=dict(type='AdamW', betas=(0.9, 0.99), weight_decay=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
]
custom_hooks = [
    dict(type='PEFTCheckpointHook'),
    dict(type='TrainableEMAHook'),
]
