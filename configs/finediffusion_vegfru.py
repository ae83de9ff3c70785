# FineDiffusion on VegFru (292 subclasses + 25 superclasses), DiT-XL/2-256.
_base_ = [
    './_base_/models/finediffusion_dit_xl_2_256.py',
    './_base_/datasets/vegfru.py', './_base_/default_runtime.py'
]

# The model's class table has a row per class of the dataset's taxonomy.
model = dict(backbone=dict(taxonomy={{_base_.taxonomy}}))
train_cfg = dict(
    type='ResumableIterBasedTrainLoop', max_iters=50000, val_interval=10000)
# The dataset config sets val_dataloader; MMEngine's Runner refuses it
# without a val loop and evaluator (for training and testing alike).
val_cfg = dict(type='MultiValLoop')
test_cfg = dict(type='MultiTestLoop')
# Inception and AlexNet weights are read from disk (README, Usage: Testing).
val_evaluator = dict(type='Evaluator', metrics=[
    dict(type='ConditionalFID', fake_nums=1000, prefix='FID-1k',
         sample_kwargs=dict(
             num_sampling_steps=50,
             scheduler=dict(type='DPMSolverMultistepScheduler'))),
])
test_evaluator = dict(type='Evaluator', metrics=[
    dict(type='ConditionalFID', fake_nums=5000, prefix='FID-5k'),
    dict(type='LPIPSDiversity', fake_nums=5000, samples_per_class=4),
])
default_hooks = dict(checkpoint=dict(interval=10000))
