# The demo's FineDiffusion fine-tuning (configs/finediffusion_synthetic.py) at
# its GPU scale (tools/demo.py --scale gpu): DiT-S/4, as pretrained by
# configs/synthetic/gpu/pretrain_base.py, batches of 256, larger image sets.
_base_ = ['../../finediffusion_synthetic.py']

model = dict(
    backbone=dict(arch='S'),
    num_sampling_steps=10,
    guidance=dict(scale=2.0))
train_dataloader = dict(batch_size=256)
train_cfg = dict(max_iters=500)
optim_wrapper = dict(optimizer=dict(lr=1e-2))

demo = dict(
    judge='configs/synthetic/gpu/judge.py',
    pretrain='configs/synthetic/gpu/pretrain_base.py',
    images_per_class=dict(base=1000, fine=400, val=50),
    amp=True,
    sample_batch=2000,
    ranks=dict(images_per_class=dict(train=400, val=50),
               new_species_iters=200),
    experiment=dict(
        # The pretraining learning rate of this scale.
        methods=dict(
            full=dict(options={'optim_wrapper.optimizer.lr': 1e-3}))))
