# VegFru at 256 px: 292 subclasses in 25 superclasses, joined by image path
# from vegfru_list/vegfru_<split>.txt and supvegfru_<split>.txt.
data_root = 'data/vegfru'
taxonomy = dict(type='VegFruDataset', data_root=data_root, split='train')

train_pipeline = [
    dict(type='LoadRGBImage', key='gt', max_failures=100),
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
    dict(type='LoadRGBImage', key='gt'),
    dict(type='ADMCenterCrop', size=256),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(taxonomy, split='test', pipeline=test_pipeline))
val_dataloader = test_dataloader

# The entries above that copy a shared spec, and what they copied: tools
# carry a later change of the spec (a child config, --cfg-options) into
# them (finediffusion.config.apply_copied_specs).
copied_specs = {
    'taxonomy.data_root': dict(spec='data_root', value=data_root),
    # Set by the config that joins a model to this dataset.
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value=train_pipeline),
    'test_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'test_dataloader.dataset.pipeline':
    dict(spec='test_pipeline', value=test_pipeline),
    'val_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'val_dataloader.dataset.pipeline':
    dict(spec='test_pipeline', value=test_pipeline),
}
