"""tools/dist_train.sh with 2 processes over gloo on the CPU: PEFT under
MMEngine's DDP keeps the ranks identical and the frozen weights untouched."""
import os
import os.path as osp
import subprocess

import torch

from conftest import REPO, free_port
from test_peft import base, peft_cfg  # noqa: F401  (the base fixture)


def test_dist_train_two_ranks_gloo(tiny_cfg, base, tmp_path):  # noqa: F811
    cfg = peft_cfg(tiny_cfg, base, iters=3)
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='DistProbeHook'))
    cfg.default_hooks.checkpoint.interval = 3
    config = str(tmp_path / 'ddp_cfg.py')
    cfg.dump(config)
    env = dict(os.environ, PORT=free_port(),
               PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    run = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, '2'],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]

    ranks = [torch.load(osp.join(cfg.work_dir, f'probe_rank{r}.pt'))
             for r in (0, 1)]
    official = torch.load(base)
    trainable = set(ranks[0]['trainable'])
    changed = 0
    for name, value in ranks[0]['params'].items():
        assert torch.equal(value, ranks[1]['params'][name]), name
        if name in trainable:
            changed += not torch.equal(value, official.get(name, value))
        elif name in official:
            assert torch.equal(value, official[name]), name
    assert changed > 0  # training happened
    for name, value in ranks[0]['ema'].items():
        assert torch.equal(value, ranks[1]['ema'][name]), name
    # The ranks split each epoch: their first 16 of 32 samples are disjoint.
    first = [set(r['seen'][:16]) for r in ranks]
    assert len(ranks[0]['seen']) >= 16 and not first[0] & first[1]
    assert first[0] | first[1] == set(range(32))
    # One checkpoint, written once (by rank 0).
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_3.pth'))
