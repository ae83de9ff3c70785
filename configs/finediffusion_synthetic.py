# FineDiffusion on the synthetic fine-grained taxonomy (100 subclasses in 10
# shape families), the recipe that tools/demo.py runs at its CPU scale: the
# base-pretrained TieredDiT of configs/synthetic/pretrain_base.py, PEFT
# fine-tuned with a new tiered table and affine LayerNorms. A null row also
# trains (null_prob), so that one model compares fine-grained and standard
# CFG. It keeps the base run's min-SNR weighting (the paper fine-tunes with
# DiT's plain loss). The GPU scale: configs/synthetic/gpu/finetune.py.
_base_ = [
    './_base_/default_runtime.py', './synthetic/_base_/tiered_dit.py'
]

data_root = 'data/synthetic/fine/train'
taxonomy = dict(type='HierarchyDataset', data_root=data_root)

model = dict(
    backbone=dict(
        taxonomy=taxonomy,
        affine_norms=True,
        # Written by tools/demo.py from the pretraining run's EMA weights,
        # in the official DiT layout.
        pretrained='work_dirs/demo/pretrain/base_dit.pth',
        # New classes start at the base model's null (unconditional) row
        # rather than at random rows of the base table's scale: it raised
        # unguided subclass top-1 and fine-grained CFG's lead over it.
        class_init='null',
        class_init_std=0.1),
    trainable='finediffusion',
    ema_decay=0.99,
    # Scale 1.5: the best or near-best fine-grained scale for this budget.
    guidance=dict(type='TieredGuidance', scale=1.5))

train_dataloader = dict(
    dataset=dict(taxonomy, pipeline={{_base_.train_pipeline}}))
# The entries above that copy a shared spec, and what they copied
# (finediffusion.config.apply_copied_specs).
copied_specs = {
    'taxonomy.data_root': dict(spec='data_root', value=data_root),
    'model.backbone.taxonomy': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset': dict(spec='taxonomy', value=taxonomy),
    'train_dataloader.dataset.pipeline':
    dict(spec='train_pipeline', value={{_base_.train_pipeline}}),
}

train_cfg = dict(max_iters=910)
optim_wrapper = dict(optimizer=dict(lr=2e-2))

env_cfg = dict(cudnn_benchmark=False)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=100000, max_keep_ckpts=1, save_last=True))
log_processor = dict(window_size=50)

# What tools/demo.py runs at this scale besides this config: the judge's
# and the pretraining's configs (paths from the repository root), the image
# sets it writes, the precision of the trainings on a GPU, how it samples
# this model for the judge (with the model's sampler, num_sampling_steps and
# guidance scale) and what --experiment compares.
demo = dict(
    judge='configs/synthetic/judge.py',
    pretrain='configs/synthetic/pretrain_base.py',
    # Images per class of the base set (pretraining) and of the fine set's
    # splits (the judge's training and held-out images; fine-tuning trains
    # on the fine training split).
    images_per_class=dict(base=150, fine=100, val=20),
    # --amp of tools/train.py (bf16) when training on a GPU.
    amp=False,
    # 1,000 samples, ten per subclass: enough for a 95% interval of about
    # +-3 points on a paired gain.
    samples_per_class=10,
    sample_batch=500,
    # --ranks: the three-level benchmark on the ranked set (80 species in
    # 20 genera and 10 families): images per species of its splits; every
    # tenth species held out and added later from `shots` images in
    # `new_species_iters` steps (tools/add_species.py); the hierarchical
    # guidance's scales compared (null > family, family > genus, genus >
    # species; equal scales would be standard CFG).
    ranks=dict(
        images_per_class=dict(train=100, val=20),
        held_out_every=10,
        shots=5,
        new_species_iters=100,
        hierarchical_scales=[[2., 1., 2.], [1.5, 2., 3.], [2., 2., 3.],
                             [2., 3., 4.]]),
    experiment=dict(
        guidance_scales=[1., 2., 3., 4., 5., 6.],
        # PEFT against the paper's baselines, each a fine-tuning run of this
        # config with these --cfg-options (none: this config's own run).
        methods=dict(
            peft=dict(title='FineDiffusion PEFT'),
            # Every weight moves: the pretraining learning rate, not the
            # larger one that bias and norm tuning takes.
            full=dict(
                title='full fine-tuning',
                options={
                    'model.trainable': 'full',
                    'optim_wrapper.optimizer.lr': 4e-3
                }),
            # BitFit trains biases only; a new taxonomy also needs its
            # class table, so it trains here too (as in the paper's
            # baseline).
            bitfit=dict(
                title='BitFit (+ class table)',
                options={'model.trainable': ['y_embedder.*', '*.bias']}))))
