# The demo's pretraining (configs/synthetic/pretrain_base.py) at its GPU
# scale (tools/demo.py --scale gpu): DiT-S/4 in pixel space, batches of 256.
_base_ = ['../pretrain_base.py']

model = dict(backbone=dict(arch='S'), ema_decay=0.995)
train_dataloader = dict(batch_size=256)
train_cfg = dict(max_iters=1200)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
