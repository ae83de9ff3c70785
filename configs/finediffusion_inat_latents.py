# The paper's setting on a latent cache, which removes the VAE encoder from
# each step (the bottleneck of PEFT on a fast GPU). Make the cache once:
#   python tools/cache_latents.py configs/finediffusion_inat.py data/inat2021/latents_256
_base_ = ['./finediffusion_inat.py']

cache = dict(type='LatentDataset', cache_dir='data/inat2021/latents_256')
# The cache keeps the taxonomy of the images it encodes; no VAE encoder runs.
model = dict(backbone=dict(taxonomy=dict(_delete_=True, **cache)))
train_dataloader = dict(
    # Batches are stacked in the workers: a few tensors cross to the main
    # process instead of a set per sample, and the latents are pinned.
    collate_fn=dict(type='stack_collate'),
    pin_memory=True,
    dataset=dict(
        _delete_=True,
        **cache,
        pipeline=[
            dict(type='LoadLatent'),
            dict(type='PickLatentFlip', prob=0.5),
            # The posterior is the model's input. The cache entry goes with
            # the sample, to be named if its latents are not finite (a cache
            # of an older version).
            dict(type='PackInputs', keys=['latent_mean', 'latent_std'],
                 meta_keys=['latent_path', 'latent_row']),
        ]))
# The model and the training set copy the cache spec now, not taxonomy
# (the test set still does); train_pipeline reaches nothing here.
copied_specs = {
    'model.backbone.taxonomy':
    dict(spec='cache', value=dict(_delete_=True, **cache)),
    'train_dataloader.dataset':
    dict(spec='cache', value=dict(_delete_=True, **cache)),
}
