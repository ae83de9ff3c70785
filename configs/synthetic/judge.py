# The demo's judge (tools/demo.py) at its CPU scale: an mmpretrain ResNet-18
# (CIFAR stem, 16 base channels) that names the subclass of a synthetic
# fine-grained image. Trained on real synthetic images, it scores generated
# ones; its top-1 on held-out real images is reported next to its verdicts.
# Its first stage works at half resolution: the classes differ in shape, hue
# and shade, not in pixel-fine detail, and its steps run three times faster
# on a CPU. The GPU scale: configs/synthetic/gpu/judge.py.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['finediffusion'], allow_failed_imports=False)

data_root = 'data/synthetic/fine'
num_classes = 100

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        stem_channels=16,
        base_channels=16,
        strides=(2, 2, 2, 1),
        out_indices=(3, ),
        zero_init_residual=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss')))
# Images as OpenCV reads them (BGR), like every mmpretrain model: generated
# images are scored in that order too (ClassifierFidelity).
data_preprocessor = dict(
    num_classes=num_classes, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)

pipeline = [
    dict(type='mmagic.LoadRGBImage', key='gt', channel_order='bgr'),
    dict(type='PackInputs', input_key='gt'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    sampler=dict(type='mmagic.ResumableInfiniteSampler', shuffle=True),
    # Stacked in the workers: one shared-memory tensor per batch instead of
    # one per image, which made the main process the bottleneck on a GPU.
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='mmagic.HierarchyDataset',
        data_root=f'{data_root}/train',
        pipeline=pipeline))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='mmagic.HierarchyDataset',
        data_root=f'{data_root}/val',
        pipeline=pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
# The entries above that copy num_classes: tools carry a later change of it
# (--cfg-options) into them (finediffusion.config.apply_copied_specs).
copied_specs = {
    'model.head.num_classes': dict(spec='num_classes', value=num_classes),
    'data_preprocessor.num_classes':
    dict(spec='num_classes', value=num_classes),
}

train_cfg = dict(
    type='mmagic.ResumableIterBasedTrainLoop', max_iters=300,
    val_interval=300)
val_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=3e-3, weight_decay=1e-4))
# Warm-up over the first fifth, then the cosine decay. (Not OneCycleLR: its
# state holds a bound method, which a weights_only load refuses.)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.03, by_epoch=False, begin=0,
         end=60),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=60, end=300,
         eta_min=1e-5),
]

env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=100000, by_epoch=False,
        save_last=True, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
