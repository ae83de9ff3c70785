# FineDiffusion under MMagic's own tools for generative models: the
# VisualizationHook's 'GAN' mode and the noise-driven metrics, which request
# images without labels (FineDiffusion then draws subclasses uniformly, as
# MMagic's conditional GANs do): FID without need_cond_input, Inception
# Score, sliced Wasserstein distance and MS-SSIM, in MMagic's MultiValLoop.
# StyleGAN's TorchScript Inception cannot be downloaded here: put it at
# inception_path (tests stand a locally made TorchScript file in for it).
# Train: python tools/train.py configs/mmagic/finediffusion_gan_tools.py
_base_ = ['../finediffusion_tiny_cpu.py']

inception_path = 'work_dirs/inception-2015-12-05.pt'
image_shape = (3, 16, 16)

val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BasicConditionalDataset',
        data_root='data/toy_hierarchy',
        pipeline=[
            dict(type='LoadImageFromFile', key='gt'),
            dict(type='PackInputs', keys='gt'),
        ]))
val_evaluator = dict(
    type='Evaluator',
    metrics=[
        dict(type='FrechetInceptionDistance', prefix='FID', fake_nums=8,
             need_cond_input=False, inception_style='StyleGAN',
             inception_path=inception_path, sample_model='ema'),
        dict(type='InceptionScore', prefix='IS', fake_nums=8, splits=2,
             inception_style='StyleGAN', inception_path=inception_path,
             sample_model='ema'),
        dict(type='SWD', prefix='SWD', fake_nums=8, image_shape=image_shape,
             sample_model='ema'),
        dict(type='MultiScaleStructureSimilarity', prefix='MS-SSIM',
             fake_nums=8, sample_model='ema'),
    ])
val_cfg = dict(type='MultiValLoop')
train_cfg = dict(val_interval=20)
# Four respaced DDPM steps per image: a check that the tools run, not a
# quality setting.
model = dict(num_sampling_steps=4)

custom_hooks = [
    dict(type='PEFTCheckpointHook'),
    dict(type='TrainableEMAHook'),
    dict(type='ResumeRandomStateHook'),
    dict(type='VisualizationHook', interval=20, fixed_input=True,
         vis_kwargs_list=dict(type='GAN', name='fake_img')),
]
vis_backends = [dict(type='VisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends,
                  name='visualizer')

copied_specs = {
    'val_dataloader.dataset.data_root':
    dict(spec='data_root', value='data/toy_hierarchy'),
    'val_evaluator.metrics.0.inception_path':
    dict(spec='inception_path', value=inception_path),
    'val_evaluator.metrics.1.inception_path':
    dict(spec='inception_path', value=inception_path),
    'val_evaluator.metrics.2.image_shape':
    dict(spec='image_shape', value=image_shape),
}
