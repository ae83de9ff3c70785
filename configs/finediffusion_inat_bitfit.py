# Baseline: BitFit (biases only) on iNat 2021 mini, plus the class table.
# The 10,011-row tiered table is new (the base DiT's rows are ImageNet's
# classes and are never loaded), so BitFit of a new taxonomy must train it
# too, as the FineDiffusion paper's baseline does: with biases only it would
# stay at its random initialization, which checkpoints do not even save, and
# FineDiffusion refuses such a trainable set.
_base_ = ['./finediffusion_inat.py']
model = dict(trainable=['y_embedder.*', '*.bias'])
