# The paper's setting at 512 px: DiT-XL/2-512 on iNaturalist 2021 mini.
_base_ = [
    './_base_/models/finediffusion_dit_xl_2_512.py',
    './_base_/datasets/inat2021.py', './_base_/default_runtime.py'
]

model = dict(backbone=dict(taxonomy={{_base_.taxonomy}}))
train_pipeline = [
    dict(type='LoadRGBImage', key='gt', max_failures=100),
    dict(type='ADMCenterCrop', size=512),
    dict(type='Flip', keys=['gt'], direction='horizontal'),
    dict(type='PackInputs', keys='gt'),
]
test_pipeline = [
    dict(type='LoadRGBImage', key='gt'),
    dict(type='ADMCenterCrop', size=512),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
val_dataloader = test_dataloader
# What the entries above copied, for tools to carry later changes of the
# specs (finediffusion.config); the datasets' records are the base's.
copied_specs = {
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value=train_pipeline),
    'test_dataloader.dataset.pipeline':
    dict(spec='test_pipeline', value=test_pipeline),
    'val_dataloader.dataset.pipeline':
    dict(spec='test_pipeline', value=test_pipeline),
}
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=100000)
test_cfg = dict(type='MultiTestLoop')
test_evaluator = dict(type='Evaluator', metrics=[
    dict(type='ConditionalFID', fake_nums=10000, prefix='FID-10k'),
    dict(type='LPIPSDiversity', fake_nums=10000, samples_per_class=4),
])
default_hooks = dict(checkpoint=dict(interval=10000))
