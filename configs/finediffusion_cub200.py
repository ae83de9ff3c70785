# Adding a dataset by inheritance: CUB-200-2011 with bird families as
# superclasses. cub_families.csv lists path,subclass,superclass per image.
_base_ = ['./finediffusion_vegfru.py']  # any FineDiffusion config

data_root = 'data/CUB_200_2011'
# _delete_: replaces the base's taxonomy wherever it is copied below.
taxonomy = dict(_delete_=True, type='HierarchyDataset', data_root=data_root,
                ann_file='cub_families.csv')
model = dict(backbone=dict(taxonomy=taxonomy))
train_dataloader = dict(dataset=dict(
    taxonomy, pipeline={{_base_.train_pipeline}}))
test_dataloader = dict(dataset=dict(
    taxonomy, pipeline={{_base_.test_pipeline}}))
val_dataloader = test_dataloader
# What the entries above copied, for tools to carry later changes of the
# specs (finediffusion.config); the pipelines' records are the base's.
copied_specs = {
    'taxonomy.data_root': dict(spec='data_root', value=data_root),
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'test_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'val_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
}
