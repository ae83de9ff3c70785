# FineDiffusion on DiT-XL/2 at 512 px (64 x 64 SD-VAE latents).
_base_ = ['./finediffusion_dit_xl_2_256.py']
model = dict(
    backbone=dict(
        input_size=64, pretrained='checkpoints/DiT-XL-2-512x512.pt'))
