# Baseline: DiffFit-style (biases, norms, class table, per-block scales).
_base_ = ['./finediffusion_inat.py']
model = dict(trainable='difffit', backbone=dict(block_scales=True))
