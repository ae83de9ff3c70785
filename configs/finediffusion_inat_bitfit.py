# Baseline: BitFit (biases only) on iNat 2021 mini.
_base_ = ['./finediffusion_inat.py']
model = dict(trainable='bitfit')
