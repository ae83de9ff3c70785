# VegFru at 256 px: 292 subclasses in 25 superclasses, joined by image path
# from vegfru_list/vegfru_<split>.txt and supvegfru_<split>.txt.
data_root = 'data/vegfru'
taxonomy = dict(type='VegFruDataset', data_root=data_root, split='train')

train_pipeline = [
    dict(type='LoadTieredImage', key='gt', max_failures=100),
    dict(type='ADMCenterCrop', size=256),
    dict(type='Flip', keys=['gt'], direction='horizontal'),
    dict(type='PackInputs', keys='gt'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    dataset=dict(**taxonomy, pipeline=train_pipeline))

test_pipeline = [
    dict(type='LoadTieredImage', key='gt'),
    dict(type='ADMCenterCrop', size=256),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='VegFruDataset',
        data_root=data_root,
        split='test',
        pipeline=test_pipeline))
val_dataloader = test_dataloader
