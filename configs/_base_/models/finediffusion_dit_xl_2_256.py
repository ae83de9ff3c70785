# FineDiffusion on DiT-XL/2 at 256 px (32 x 32 SD-VAE latents), the paper's
# PEFT set, EMA and fine-grained CFG. A config sets model.backbone.taxonomy
# to its dataset's taxonomy spec.
model = dict(
    type='FineDiffusion',
    backbone=dict(
        type='TieredDiT',
        arch='XL',
        patch_size=2,
        input_size=32,
        in_channels=4,
        affine_norms=True,
        super_prob=0.1,
        # The official release (facebookresearch/DiT), downloaded by hand.
        pretrained='checkpoints/DiT-XL-2-256x256.pt'),
    # A diffusers folder of the SD-VAE DiT uses (stabilityai/sd-vae-ft-ema).
    vae=dict(type='AutoencoderKL', from_pretrained='checkpoints/sd-vae-ft-ema'),
    trainable='finediffusion',
    ema_decay=0.9999,
    guidance=dict(type='TieredGuidance', mode='fine_grained', scale=4.0),
    num_sampling_steps=250,
    # On GPUs the backbone and the VAE run in bf16 (the trained tensors and
    # the optimizer stay float32) and the backbone is compiled on its first
    # step; CPU runs keep float32 and eager mode. compile=False turns
    # compilation off.
    autocast=dict(cuda='bfloat16'),
    compile=True,
    data_preprocessor=dict(type='DiTDataPreprocessor'))

optim_wrapper = dict(
    constructor='PEFTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0., fused=True))
custom_hooks = [
    dict(type='PEFTCheckpointHook'),
    dict(type='TrainableEMAHook'),
    dict(type='ResumeRandomStateHook'),
]
