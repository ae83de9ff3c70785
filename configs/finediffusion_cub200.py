# Adding a dataset by inheritance: CUB-200-2011 with bird families as
# superclasses. cub_families.csv lists path,subclass,superclass per image.
_base_ = ['./finediffusion_vegfru.py']  # any FineDiffusion config

data_root = 'data/CUB_200_2011'
taxonomy = dict(type='HierarchyDataset', data_root=data_root,
                ann_file='cub_families.csv')
model = dict(backbone=dict(sub2super=dict(_delete_=True, **taxonomy)))
train_dataloader = dict(dataset=dict(
    _delete_=True, **taxonomy, pipeline={{_base_.train_pipeline}}))
test_dataloader = dict(dataset=dict(
    _delete_=True, **taxonomy, pipeline={{_base_.test_pipeline}}))
val_dataloader = test_dataloader
