# The paper's setting with three ancestor ranks instead of one: DiT-XL/2-256
# fine-tuned with FineDiffusion's PEFT on iNaturalist 2021 mini, a class row
# per species, genus, family and supercategory (10,000 + 4,884 + 1,103 + 11 =
# 15,998 rows). In training a label is replaced by its genus, its family or
# its supercategory with probability 0.1 each. PEFT trains 19,050,656 of
# 692,537,504 parameters (2.751%; the two-tier config: 1.773%), as
# tests/test_configs.py builds it on the meta device and PEFTFreezeHook logs
# at the start of training. Guidance defaults to the paper's (against the
# supercategory); --cfg-options model.guidance.reference=genus or the
# hierarchical mode guide from the finer ranks.
#   tools/dist_train.sh configs/finediffusion_inat_ranks.py 8
_base_ = ['./finediffusion_inat.py']

# Finest first; the last is the superclass rank.
ranks = ('genus', 'family', 'supercategory')
taxonomy = dict(ranks=ranks)

model = dict(
    backbone=dict(
        taxonomy=taxonomy, rank_probs=dict(genus=0.1, family=0.1)))
train_dataloader = dict(dataset=dict(taxonomy))
test_dataloader = dict(dataset=dict(taxonomy))
val_dataloader = test_dataloader
