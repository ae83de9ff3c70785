# Baseline: full fine-tuning of DiT-XL/2-256 on iNat 2021 mini.
_base_ = ['./finediffusion_inat.py']
model = dict(trainable='full')
