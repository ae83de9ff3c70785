# Stage 1 of the demo (tools/demo.py) at its CPU scale: a small TieredDiT
# trained fully, in pixel space, on the synthetic base taxonomy (12 shape
# families x 5 hue ranges). It stands in for DiT's ImageNet pretraining:
# like the official DiT it has plain LayerNorms, and a null row for
# standard CFG. The GPU scale: configs/synthetic/gpu/pretrain_base.py.
_base_ = ['../_base_/default_runtime.py', './_base_/tiered_dit.py']

data_root = 'data/synthetic/base/train'
taxonomy = dict(type='HierarchyDataset', data_root=data_root)

model = dict(
    backbone=dict(
        taxonomy=taxonomy,
        affine_norms=False,
        # DiT's 0.02 class table needs hundreds of thousands of steps to
        # matter next to the timestep embedding; this run has a few
        # thousand.
        class_init_std=1.0),
    trainable='full',
    # A short run: the EMA must forget the random init within it.
    ema_decay=0.99)

train_dataloader = dict(
    dataset=dict(taxonomy, pipeline={{_base_.train_pipeline}}))
# The entries above that copy a shared spec, and what they copied: tools
# carry a later change of the spec (a child config, --cfg-options) into
# them (finediffusion.config.apply_copied_specs).
copied_specs = {
    'taxonomy.data_root': dict(spec='data_root', value=data_root),
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value={{_base_.train_pipeline}}),
}

# Most of the CPU demo's training time goes to this stage: the base model's
# shapes and hues are what fine-tuning builds on.
train_cfg = dict(max_iters=1950)
optim_wrapper = dict(optimizer=dict(lr=4e-3))

env_cfg = dict(cudnn_benchmark=False)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=100000, max_keep_ckpts=1, save_last=True))
log_processor = dict(window_size=50)
