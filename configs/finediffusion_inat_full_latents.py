# Baseline on the latent cache: full fine-tuning of DiT-XL/2-256, to compare
# with configs/finediffusion_inat_latents.py at equal batch.
_base_ = ['./finediffusion_inat_latents.py']
model = dict(trainable='full')
