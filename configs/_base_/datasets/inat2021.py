# iNaturalist 2021 mini at 256 px: 10,000 species in 11 supercategories.
# data_root holds train_mini.json, val.json and the image folders they name.
data_root = 'data/inat2021'
# The taxonomy spec: the model's class table and the dataset read it from the
# same annotation file (superclass = super_rank).
taxonomy = dict(
    type='INat2021Dataset',
    data_root=data_root,
    ann_file='train_mini.json',
    super_rank='supercategory')

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

# Real images for FID statistics; generated classes are drawn from them.
test_pipeline = [
    dict(type='LoadRGBImage', key='gt'),
    dict(type='ADMCenterCrop', size=256),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    # The taxonomy's files and rank, on the validation annotations.
    dataset=dict(taxonomy, ann_file='val.json', pipeline=test_pipeline))
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
