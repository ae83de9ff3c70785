# Runtime shared by every FineDiffusion config (MMagic conventions).
default_scope = 'mmagic'
# Registers the plugin's modules into MMagic's registries.
custom_imports = dict(imports=['finediffusion'], allow_failed_imports=False)

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        interval=10000,
        by_epoch=False,
        max_keep_ckpts=3,
        save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
log_processor = dict(type='LogProcessor', window_size=100, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# Each rank draws its own timesteps, noise and label dropout; the data
# sampler still shares one seed, so the ranks split every epoch.
randomness = dict(seed=0, diff_rank_seed=True)
