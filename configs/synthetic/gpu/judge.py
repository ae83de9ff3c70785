# The demo's judge (configs/synthetic/judge.py) at its GPU scale
# (tools/demo.py --scale gpu): the same classifier, larger batches and more
# steps.
_base_ = ['../judge.py']

train_dataloader = dict(batch_size=256)
train_cfg = dict(max_iters=500, val_interval=500)
# Warm-up over the first fifth, then the cosine decay.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.03, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=500,
         eta_min=1e-5),
]
