"""Which MMagic models build, train and resume on our stack, measured.

For each config of MMagic's model families (the first of each family in
sorted order unless ``--all-configs``) a subprocess loads the config,
builds ``cfg.model`` and runs ``init_weights`` as the Runner does. GAN-like
models (a ``generator`` and a ``train_step``) then run two train steps on a
batch of random images, save the Runner's resume state with ``torch.save``,
load it back with ``torch.load(weights_only=True)`` (what resuming does on
torch >= 2.6), load it into freshly built objects and run one more step.
The network is cut in the subprocess, so any download fails at once and is
reported as ``needs_download``. Prints one JSON line per config, then a
JSON summary. Example:
    nice -n 10 python benchmarks/mmagic_models.py dcgan sngan_proj \\
        --out /tmp/mm_models/after.jsonl
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from typing import Dict, List, Optional, Tuple

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from mmagic.utils import register_all_modules

GAN_STAGES = ('config', 'build', 'init_weights', 'train_step', 'save',
              'load', 'resume_step')
OTHER_STAGES = ('config', 'build', 'init_weights')
TIMEOUT_S = 180
MEMORY_LIMIT = 14 * 2**30  # address space of one worker, bytes
MARK = '@@'

# (regex, category, reason, whether to search the traceback too rather
# than only 'Type: message @ where'); the first match wins. Written after
# reading the tracebacks of a full run (see the report of the run).
KNOWN_CAUSES: List[Tuple[str, str, str, bool]] = [
    (r'network disabled by benchmark|LocalEntryNotFoundError|'
     r'not cached locally|does not appear to have a file named|'
     r"couldn't connect|Pretrained checkpoint missing", 'needs_download',
     'tries to download weights or a hub model', True),
    (r"MemoryError|can't allocate memory|DefaultCPUAllocator|timeout after",
     'too_big', 'memory or time on 1 CPU thread', False),
    (r'Found no NVIDIA driver|Torch not compiled with CUDA', 'upstream',
     'hard-coded .cuda() in MMagic: fails on any CPU-only machine', False),
    (r"local variable 'init_info'", 'upstream',
     'MMagic init_weights reads init_info it never set', False),
    (r"unexpected keyword argument 'init_cfg'", 'upstream',
     'MMagic config passes init_cfg to a module that takes none', False),
    (r'Cannot find generator_-1', 'upstream',
     'SinGAN keeps curr_stage outside its state_dict: no resume', False),
    (r'betas must be either both floats', 'our_stack',
     'torch >= 2.x refuses the int beta 0 of MMagic configs', False),
    (r'No module named|ModuleNotFoundError|need to be installed', 'our_stack',
     'missing optional package', False),
    (r'numpy|np\.|scipy|weights_only|Weights only load|diffusers|'
     r'transformers|huggingface_hub', 'our_stack',
     'version of numpy/torch/scipy/diffusers/transformers/hf_hub', False),
]


def cut_network() -> None:
    """Makes every socket connection and name lookup fail at once, so a
    download is an error naming itself, never a hang."""

    def refuse(*args, **kwargs):
        raise OSError('offline: network disabled by benchmark')

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse


def site_frame(tb) -> str:
    """The deepest frame of a traceback inside site-packages, as
    'pkg/path.py:line' (else the deepest frame at all)."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return ''
    inside = [f for f in frames if 'site-packages' in f.filename]
    frame = (inside or frames)[-1]
    path = frame.filename.split('site-packages/')[-1]
    return f'{path}:{frame.lineno}'


def classify(error: str, trace: str) -> Tuple[str, str]:
    """Category and reason of a failure from its message and traceback,
    by :data:`KNOWN_CAUSES`; 'upstream' when nothing matches."""
    for pattern, category, reason, in_trace in KNOWN_CAUSES:
        if re.search(pattern, error) or in_trace and re.search(
                pattern, trace):
            return category, reason
    return 'upstream', 'no version or download cause found'


def pretrained_missing(cfg: dict, path: str = 'model') -> Optional[str]:
    """Where a ``Pretrained`` init_cfg of a config asks for a URL or a
    missing file, else None."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        inits = init if isinstance(init, list) else [init]
        for item in inits:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                ckpt = str(item.get('checkpoint', ''))
                if '://' in ckpt or not os.path.exists(ckpt):
                    return f'{path}.init_cfg: {ckpt}'
        items = cfg.items()
    elif isinstance(cfg, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(cfg))
    else:
        return None
    for key, value in items:
        found = pretrained_missing(value, f'{path}.{key}')
        if found:
            return found
    return None


def image_size(model, cfg) -> Tuple[int, int]:
    """The training resolution: the generator's ``out_size`` /
    ``output_scale``, else the crop or resize of the train pipeline."""
    gen = model.generator
    gen = getattr(gen, 'module', gen)
    for name in ('out_size', 'output_scale', 'out_scale', 'img_size',
                 'output_size', 'resolution'):
        value = getattr(gen, name, None)
        if isinstance(value, int):
            return value, value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return int(value[0]), int(value[1])
    pipeline = cfg.get('train_dataloader', {}).get('dataset', {}).get(
        'pipeline', [])
    for step in reversed(pipeline):
        for key in ('crop_size', 'scale', 'size'):
            value = step.get(key) if isinstance(step, dict) else None
            if isinstance(value, int):
                return value, value
            if isinstance(value, (tuple, list)) and len(value) == 2:
                return int(value[0]), int(value[1])
    return 64, 64


def gan_label(model):
    """A label for one sample of a conditional GAN (EG3D: a camera of 25
    values), None for an unconditional one."""
    import torch
    from mmagic.models.base_models import BaseConditionalGAN
    if not isinstance(model, BaseConditionalGAN):
        return None
    if type(model).__name__ == 'EG3D':
        return torch.randn(25)
    num_classes = getattr(model, 'num_classes', None) or getattr(
        model.generator, 'num_classes', None)
    if not num_classes:
        return None
    return int(torch.randint(num_classes, ()).item())


def singan_batch(cfg) -> dict:
    """SinGAN's batch: the pyramid of one random image, as SinGANDataset
    and PackInputs make it for the config (batch size 1)."""
    import numpy as np
    import torch
    from mmagic.datasets.singan_dataset import create_real_pyramid
    from mmagic.structures import DataSample
    dataset = cfg.train_dataloader.dataset
    real = np.random.randint(0, 256, (248, 372, 3), dtype=np.uint8)
    reals, _, _ = create_real_pyramid(real, dataset.min_size,
                                      dataset.max_size,
                                      dataset.scale_factor_init)
    inputs = {
        f'real_scale{i}':
        torch.from_numpy(np.ascontiguousarray(r)).permute(2, 0, 1)[None].float()
        for i, r in enumerate(reals)
    }
    inputs['input_sample'] = torch.zeros_like(inputs['real_scale0'])
    return dict(inputs=inputs, data_samples=[DataSample()])


def gan_batch(model, cfg, num: int = 2) -> dict:
    """A batch of ``num`` random 0-255 images of the model's resolution in
    the format of MMagic's data preprocessor (images also as ``gt_img``,
    which PGGAN reads; labels for conditional models)."""
    import torch
    from mmagic.structures import DataSample
    if type(model).__name__ == 'SinGAN':
        return singan_batch(cfg)
    height, width = image_size(model, cfg)
    imgs = torch.randint(0, 256, (num, 3, height, width)).float()
    samples = []
    for img in imgs:
        sample = DataSample(gt_img=img.clone())
        label = gan_label(model)
        if label is not None:
            sample.set_gt_label(label)
        samples.append(sample)
    return dict(inputs=dict(img=imgs), data_samples=samples)


def build_schedulers(optim_wrapper, cfg) -> Dict[Optional[str], list]:
    """The param schedulers of ``cfg.param_scheduler`` per optimizer
    wrapper name (None for a single wrapper), as the Runner builds them."""
    import copy

    from mmagic.registry import PARAM_SCHEDULERS
    from mmengine.optim import OptimWrapperDict
    config = cfg.get('param_scheduler')
    if not config:
        return {}
    wrappers = dict(optim_wrapper.items()) if isinstance(
        optim_wrapper, OptimWrapperDict) else {None: optim_wrapper}
    schedulers = {}
    for name, wrapper in wrappers.items():
        sub = config[name] if isinstance(config, dict) and \
            'type' not in config else config
        sub = sub if isinstance(sub, list) else [sub]
        schedulers[name] = [
            PARAM_SCHEDULERS.build(
                copy.deepcopy(s),
                default_args=dict(optimizer=wrapper, epoch_length=1))
            for s in sub
        ]
    return schedulers


def build_model(cfg, init: bool = True):
    """``cfg.model`` built by MMagic's MODELS, weights initialised."""
    import copy

    from mmagic.registry import MODELS
    model = MODELS.build(copy.deepcopy(cfg.model))
    if init:
        model.init_weights()
    return model


def train(model, optim_wrapper, schedulers, batch_fn, iters) -> None:
    """``train_step`` at each of ``iters`` as the Runner's loop calls it:
    'iter' in the message hub first, log_vars into it after
    (RuntimeInfoHook), iteration-based schedulers stepped."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    model.train()
    for it in iters:
        hub.update_info('iter', it)
        log_vars = model.train_step(batch_fn(), optim_wrapper)
        for key, value in log_vars.items():
            hub.update_scalar(f'train/{key}', value)
        for scheduler in sum(schedulers.values(), []):
            if not scheduler.by_epoch:
                scheduler.step()


def resume_state(model, optim_wrapper, schedulers) -> dict:
    """What the Runner's checkpoint holds for resuming."""
    from mmengine.logging import MessageHub
    states = {
        name: [s.state_dict() for s in group]
        for name, group in schedulers.items()
    }
    return dict(
        state_dict=model.state_dict(),
        optimizer=optim_wrapper.state_dict(),
        param_schedulers=states[None] if None in states else states,
        message_hub=MessageHub.get_current_instance().state_dict())


def load_resume_state(state: dict, model, optim_wrapper,
                      schedulers) -> None:
    """Loads a resume state into fresh objects as ``Runner.resume`` does
    (model non-strict, then optimizer, schedulers, message hub)."""
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import load_state_dict
    load_state_dict(model, state['state_dict'], strict=False)
    optim_wrapper.load_state_dict(state['optimizer'])
    saved = state['param_schedulers']
    for name, group in schedulers.items():
        for scheduler, sub in zip(group, saved if name is None else
                                  saved[name]):
            scheduler.load_state_dict(sub)
    hub = MessageHub.get_instance('mmagic_models_resumed')
    hub.load_state_dict(state['message_hub'])


def is_gan(model) -> bool:
    """Whether the model trains as a GAN: a generator, a train_step and
    MMagic's GAN base class (restoration models have a generator too)."""
    from mmagic.models.base_models import BaseGAN
    return hasattr(model, 'generator') and hasattr(
        model, 'train_step') and isinstance(model, BaseGAN)


def run_stages(path: str, info: dict):
    """Runs the stages of one config, yielding each stage once it is done.
    ``info`` receives the model kind and any Pretrained download."""
    import copy

    import torch
    from mmengine import Config
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(path)
    info['pretrained'] = pretrained_missing(cfg.model)
    yield 'config'
    model = build_model(cfg, init=False)
    info['kind'] = 'gan' if is_gan(model) else 'other'
    yield 'build'
    model.init_weights()
    yield 'init_weights'
    if info['kind'] != 'gan':
        return
    if cfg.get('optim_wrapper') is None:
        info['inference_only'] = True  # MMagic's converted-weight configs
        return
    MessageHub.get_instance('mmagic_models')
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    schedulers = build_schedulers(optim_wrapper, cfg)
    torch.manual_seed(0)
    batch = gan_batch(model, cfg)
    info['batch'] = {k: list(v.shape) for k, v in batch['inputs'].items()}
    train(model, optim_wrapper, schedulers, lambda: gan_batch(model, cfg),
          (0, 1))
    yield 'train_step'
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, 'iter_2.pth')
        torch.save(resume_state(model, optim_wrapper, schedulers), file)
        info['checkpoint_mb'] = round(os.path.getsize(file) / 2**20, 1)
        yield 'save'
        state = torch.load(file, map_location='cpu', weights_only=True)
    yield 'load'
    model = build_model(cfg)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    schedulers = build_schedulers(optim_wrapper, cfg)
    load_resume_state(state, model, optim_wrapper, schedulers)
    train(model, optim_wrapper, schedulers, lambda: gan_batch(model, cfg),
          (2, ))
    yield 'resume_step'


def worker(family: str, path: str) -> None:
    """Runs one config in this process, printing each stage reached and
    then the result as marked lines."""
    import torch
    torch.set_num_threads(1)
    cut_network()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    register_all_modules(init_default_scope=True)
    info, stage, start = {}, 'none', time.time()
    record = dict(family=family, config=os.path.basename(path))
    try:
        for stage in run_stages(path, info):
            print(f'{MARK}stage {stage}', flush=True)
        error = where = trace = None
    except BaseException as exc:  # noqa: B902  (any failure is a result)
        error = f'{type(exc).__name__}: {str(exc)[:200]}'
        where = site_frame(exc.__traceback__)
        trace = ''.join(traceback.format_exception(exc))[-4000:]
    record.update(stage_reached=stage, info=info, error=error, where=where,
                  seconds=round(time.time() - start, 1), trace=trace)
    print(MARK + 'result ' + json.dumps(record, default=str), flush=True)


def finish(record: dict) -> dict:
    """Adds ``ok`` and ``category`` (with its reason) to a worker's
    record: a Pretrained weight behind the failing init is a download."""
    info = record['info']
    stages = GAN_STAGES if info.get('kind') == 'gan' and not info.get(
        'inference_only') else OTHER_STAGES
    record['ok'] = record['error'] is None and \
        record['stage_reached'] == stages[-1]
    if record['ok']:
        record['category'], record['reason'] = 'ok', ''
        return record
    record['category'], record['reason'] = classify(
        f"{record['error']} @ {record['where']}", record.get('trace') or '')
    if record['stage_reached'] == 'build' and record['info'].get(
            'pretrained') and record['category'] == 'upstream':
        record['category'] = 'needs_download'
        record['reason'] = 'Pretrained init_cfg ' + record['info'][
            'pretrained']
    return record


def run_one(family: str, path: str) -> dict:
    """One config in a subprocess (1 thread, killed after
    :data:`TIMEOUT_S`); a crash or hang gives a record too."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
               HF_DATASETS_OFFLINE='1', DIFFUSERS_OFFLINE='1')
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), '--worker', family, path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    start = time.time()
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        crash = f'crash: exit code {proc.returncode}'
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        crash = f'timeout after {TIMEOUT_S} s'
    lines = out.splitlines()
    results = [x for x in lines if x.startswith(MARK + 'result ')]
    if results:
        return finish(json.loads(results[-1][len(MARK + 'result '):]))
    stages = [x.split()[-1] for x in lines if x.startswith(MARK + 'stage')]
    record = dict(family=family, config=os.path.basename(path),
                  stage_reached=stages[-1] if stages else 'none', info={},
                  error=crash, where=None,
                  seconds=round(time.time() - start, 1), trace=err[-4000:])
    return finish(record)


def config_files(root: str, families: List[str],
                 first_only: bool) -> List[Tuple[str, str]]:
    """(family, path) of the configs to run, families and files sorted."""
    families = families or sorted(
        d for d in os.listdir(root)
        if d != '_base_' and os.path.isdir(os.path.join(root, d)))
    selected = []
    for family in families:
        files = sorted(f for f in os.listdir(os.path.join(root, family))
                       if f.endswith('.py'))
        if first_only:
            trainable = [f for f in files
                         if trains(os.path.join(root, family, f))]
            files = files[:1] + trainable[:1] * (files[:1] != trainable[:1])
        selected += [(family, os.path.join(root, family, f)) for f in files]
    return selected


def trains(path: str) -> bool:
    """False for MMagic's inference-only configs (converted weights), which
    set ``optim_wrapper = None``; --first-only adds the family's first
    config that trains after such a first config."""
    with open(path) as file:
        return not re.search(r'optim_wrapper\s*=\s*None',
                             file.read())


def summary(records: List[dict]) -> dict:
    """Counts per category, per stage reached and per (stage, category)."""
    return dict(
        configs=len(records),
        category=dict(Counter(r['category'] for r in records)),
        stage_reached=dict(Counter(r['stage_reached'] for r in records)),
        stage_category=dict(
            Counter(f"{r['stage_reached']}/{r['category']}"
                    for r in records)))


def parse_args() -> argparse.Namespace:
    """Command line: families, --first-only / --all-configs, --out."""
    import mmagic
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('families', nargs='*',
                        help='config folders of MMagic (default: all)')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--first-only', dest='first_only',
                       action='store_true', default=True,
                       help='the first config of each family (default)')
    group.add_argument('--all-configs', dest='first_only',
                       action='store_false', help='every config')
    parser.add_argument('--configs-root', default=os.path.join(
        os.path.dirname(mmagic.__file__), '.mim', 'configs'))
    parser.add_argument('--out', help='also write the JSON lines here')
    parser.add_argument('--reclassify', metavar='JSONL',
                        help='classify the records of an earlier run again')
    parser.add_argument('--worker', nargs=2, metavar=('FAMILY', 'CONFIG'),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(*args.worker)
        return
    out = open(args.out, 'w') if args.out else None
    if args.reclassify:
        with open(args.reclassify) as file:
            jobs = [json.loads(line) for line in file]
    else:
        jobs = config_files(args.configs_root, args.families,
                            args.first_only)
    records = []
    for job in jobs:
        record = finish(job) if args.reclassify else run_one(*job)
        records.append(record)
        line = json.dumps(record, default=str)
        print(line, flush=True)
        if out:
            out.write(line + '\n')
            out.flush()
    print(json.dumps(dict(summary=summary(records))), flush=True)


if __name__ == '__main__':
    main()
