# The paper's setting: DiT-XL/2-256 fine-tuned with FineDiffusion's PEFT on
# iNaturalist 2021 mini (10,000 species + 11 supercategories = 10,011 class
# rows), AdamW lr 1e-4, no weight decay, EMA 0.9999, batch 32 per GPU on 8
# GPUs, fine-grained CFG s = 4 for visuals, FID and LPIPS evaluation.
#   tools/dist_train.sh configs/finediffusion_inat.py 8
_base_ = [
    './_base_/models/finediffusion_dit_xl_2_256.py',
    './_base_/datasets/inat2021.py', './_base_/default_runtime.py'
]

# The model's class table has a row per class of the dataset's taxonomy.
model = dict(backbone=dict(taxonomy={{_base_.taxonomy}}))

train_cfg = dict(
    type='ResumableIterBasedTrainLoop', max_iters=100000, val_interval=10000)
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
    dict(type='ConditionalFID', fake_nums=10000, prefix='FID-10k'),
    dict(type='LPIPSDiversity', fake_nums=10000, samples_per_class=4),
])
default_hooks = dict(checkpoint=dict(interval=10000))
# lr 1e-4 is for 32 images x 8 GPUs; --auto-scale-lr rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=256)
