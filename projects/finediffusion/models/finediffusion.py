"""FineDiffusion: a pretrained DiT fine-tuned to a taxonomy of subclasses
and their ancestors."""
from contextlib import nullcontext
from copy import deepcopy
from typing import (Callable, ContextManager, Dict, List, Optional, Sequence,
                    Tuple, Union)

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.models.utils import get_valid_num_batches, noise_sample_fn
from mmagic.registry import DIFFUSION_SCHEDULERS, MODELS
from mmagic.structures import DataSample
from .data_preprocessor import DiTDataPreprocessor
from .ema import TrainableEMA
from .float8 import convert_frozen_linears
from .guidance import TieredGuidance
from .peft import apply_trainable, train_rows_only
from .sampling import build_sampler, build_scheduler
from .tiered_dit import CLASS_PARAMS, CLASS_TABLE

# The weights a generation request may name, as MMagic's GANs do.
SAMPLE_MODELS = ('ema', 'orig', 'ema/orig')

ModelType = Union[dict, nn.Module]

# SD-VAE latent scale used by DiT (and by Stable Diffusion 1.x).
SD_VAE_SCALE = 0.18215


@MODELS.register_module()
class FineDiffusion(BaseModel):
    """Class-conditional latent diffusion with a tiered class table.

    The VAE is frozen, and of the backbone only ``trainable`` trains: the
    freeze is applied here, at construction, so that it is in place before
    MMEngine wraps the model in DDP. Training follows
    :meth:`BaseModel.train_step` (preprocess, ``forward(mode='loss')``,
    update), which MMEngine's DDP wrapper drives unchanged; the EMA of the
    trainable parameters is updated by :class:`TrainableEMAHook`.

    Channel order: the model's images (training inputs, :meth:`sample`'s
    outputs) are RGB, the order DiT and the SD-VAE were trained in,
    whichever loader a config uses; its data preprocessor converts the
    loaded images to RGB and the generated ones to BGR for MMagic
    (:meth:`predict`'s ``fake_img``), see :class:`DiTDataPreprocessor`.

    Args:
        backbone (dict or nn.Module): A :class:`TieredDiT`.
        vae (dict or nn.Module, optional): A diffusers AutoencoderKL through
            MMagic's wrapper, e.g. ``dict(type='AutoencoderKL',
            from_pretrained='path/to/sd-vae-ft-ema')``. None works in pixel
            space. Defaults to None.
        trainable (str or list[str]): A preset of :data:`peft.PRESETS`
            ('finediffusion', 'bitfit', 'difffit', 'full') or fnmatch
            patterns over backbone parameter names; it must include the
            class table (:data:`tiered_dit.CLASS_TABLE`), which is new, so
            'bitfit' alone is refused: BitFit of a new taxonomy is
            ``[tiered_dit.CLASS_PARAMS, '*.bias']``. Defaults to
            'finediffusion'.
        ema_decay (float, optional): Decay of the EMA of the trainable
            parameters; None keeps no EMA. Defaults to 0.9999 (DiT).
        train_only_rows (Sequence[int], optional): Only these rows of the
            class table change in training; every other trainable tensor
            keeps its value under an optimizer without weight decay
            (:func:`peft.train_rows_only`; ``tools/add_species.py``'s new
            species). None: all of ``trainable`` trains. Defaults to None.
        diffusion (dict): The :class:`DiTDiffusion` config; its
            ``learn_sigma`` follows the backbone (variance channels or not).
        guidance (dict): The :class:`TieredGuidance` config used to sample
            (mode and guidance scale).
        scheduler (dict, optional): A diffusers scheduler config to sample
            with (e.g. ``dict(type='DPMSolverMultistepScheduler')``; one of
            :data:`sampling.SUPPORTED_SCHEDULERS`, set to DiT's process by
            :func:`sampling.build_scheduler`); None uses ADM's respaced DDPM,
            DiT's reference sampler. Defaults to None.
        num_sampling_steps (int): Sampling steps. Defaults to 250 (the
            paper's FID setting, respaced DDPM).
        latent_scale (float): Factor applied to VAE latents. Defaults to
            0.18215 (SD-VAE).
        autocast (str or dict, optional): Runs the backbone and the VAE
            under ``torch.autocast`` in this dtype (e.g. 'bfloat16'), in
            training and sampling; the diffusion arithmetic and the VAE
            posterior stay float32. A dict gives a dtype per device type,
            e.g. ``dict(cuda='bfloat16')``: bf16 on GPUs while CPU runs
            keep the parameters' dtype. On CPUs with bf16 matrix units
            (AMX) bf16 trains the demo's TieredDiT about 1.25x faster.
            None, or a device type the dict does not name, leaves the
            caller's precision in force: an enclosing autocast (MMEngine's
            ``AmpOptimWrapper``, ``--amp``) applies unchanged. Defaults to
            None.
        compile (bool or dict): Compiles the backbone with
            ``torch.compile`` (in place, so parameter and state-dict names
            stay DiT's) the first time it runs on a device type of
            ``devices``, and the VAE encoder the first time it encodes
            there (image configs; 2.3x the eager SD-VAE encoder's speed on
            an H200, docs/performance.md). A dict holds ``devices``
            (default ``('cuda', )``: on the CPU, inductor builds C++ for
            minutes, longer than the short CPU runs), ``vae`` (default
            True; False leaves the encoder eager) and the keyword arguments
            of ``torch.compile`` (``mode``, ``backend``, ...). Defaults to
            False.
        float8 (bool): On a GPU, the frozen token-wise linear layers of the
            backbone (attention and MLP) compute in float8 with torchao
            (:func:`float8.convert_frozen_linears`), converted before the
            first run there and before compiling; CPU runs are unchanged.
            Needs torchao and a GPU of compute capability 8.9 or higher.
            Defaults to False.
        data_preprocessor (dict, optional): Defaults to
            :class:`DiTDataPreprocessor` (MMagic's, images to [-1, 1] in
            RGB, with a fast path for training batches). None (MMEngine's,
            no normalization) suits sampling and latent-cache training
            only.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Raises:
        ValueError: If ``autocast`` names no floating dtype or ``compile``
            a device type other than 'cpu' or 'cuda'.
            If ``data_preprocessor`` is an MMagic preprocessor other
            than a :class:`DiTDataPreprocessor` with
            ``output_channel_order='RGB'``: MMagic's own takes the inputs of
            our pipelines (packed from ``gt``) as BGR, whatever the loader.
            If ``trainable`` leaves the class table frozen.
    """

    def __init__(self,
                 backbone: ModelType,
                 vae: Optional[ModelType] = None,
                 trainable: Union[str, Sequence[str]] = 'finediffusion',
                 ema_decay: Optional[float] = 0.9999,
                 train_only_rows: Optional[Sequence[int]] = None,
                 diffusion: dict = dict(type='DiTDiffusion'),
                 guidance: dict = dict(type='TieredGuidance'),
                 scheduler: Optional[dict] = None,
                 num_sampling_steps: int = 250,
                 latent_scale: float = SD_VAE_SCALE,
                 autocast: Union[str, Dict[str, str], None] = None,
                 compile: Union[bool, dict] = False,
                 float8: bool = False,
                 data_preprocessor: Optional[dict] = dict(
                     type='DiTDataPreprocessor'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        _check_rgb(self.data_preprocessor)
        self.backbone = _build(backbone)
        self.vae = _build(vae) if vae is not None else None
        if self.vae is not None:
            self.vae.requires_grad_(False)
        self.trainable = apply_trainable(self.backbone, trainable)
        _check_class_table_trains(self.backbone, trainable)
        if train_only_rows is not None:
            train_rows_only(self.backbone, self.trainable, train_only_rows)
        self.ema = (TrainableEMA(self.backbone, self.trainable, ema_decay)
                    if ema_decay is not None else None)
        # A backbone without variance channels (learn_sigma=False) is
        # trained and sampled with DiT's fixed variance.
        self.learn_sigma = (
            self.backbone.out_channels == 2 * self.backbone.in_channels)
        self.diffusion = DIFFUSION_SCHEDULERS.build(
            diffusion, default_args=dict(learn_sigma=self.learn_sigma))
        if self.diffusion.learn_sigma != self.learn_sigma:
            raise ValueError(
                f'diffusion.learn_sigma={self.diffusion.learn_sigma} '
                f'contradicts the backbone ({self.backbone.out_channels} '
                f'output channels for {self.backbone.in_channels} input '
                'channels); leave it unset')
        if scheduler is not None:
            build_scheduler(scheduler, self.learn_sigma)  # a bad one fails now
        self.guidance = _build(guidance)
        self.scheduler = scheduler
        self.num_sampling_steps = num_sampling_steps
        self.latent_scale = latent_scale
        self.autocast_dtypes = _autocast_dtypes(autocast)
        self.compile_options = _compile_options(compile)
        self.float8 = float8
        # The names of the converted layers, once converted.
        self.float8_layers: Optional[List[str]] = None

    def _autocast(self, device: torch.device) -> ContextManager:
        """The model's autocast on ``device``, or no context at all: a
        disabled ``torch.autocast`` would switch off the caller's."""
        dtype = self.autocast_dtypes.get(device.type)
        if dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def _prepare_backbone(self, device: torch.device) -> None:
        """Before the backbone's first run on a GPU converts its frozen
        linear layers to float8 (``float8``), and compiles it before its
        first run on a device type of ``compile``'s ``devices`` (once: later
        calls reuse the graphs)."""
        if (self.float8 and device.type == 'cuda'
                and self.float8_layers is None):
            self.float8_layers = convert_frozen_linears(self.backbone)
        self._compile_once(self.backbone, device)

    def _compile_once(self, module: nn.Module, device: torch.device) -> None:
        """Compiles ``module`` in place with ``compile``'s options unless
        it is compiled already or ``device`` is not one of its devices."""
        options = self.compile_options
        if (options is not None and device.type in options['devices']
                and getattr(module, '_compiled_call_impl', None) is None):
            module.compile(**options['kwargs'])

    def cast_backbone(self, dtype: torch.dtype) -> None:
        """Casts the backbone's weights and their EMA to ``dtype`` (e.g. bf16
        weights for sampling, which spares autocast's per-call casts of the
        frozen weights). For inference only: training keeps float32 master
        weights, which the optimizer holds."""
        self.backbone.to(dtype)
        if self.ema is not None:
            self.ema.to(dtype)

    def _prepare_encoder(self, device: torch.device) -> None:
        """Compiles the VAE encoder in place before its first run on a
        device type of ``compile``'s ``devices`` (unless ``vae=False``)."""
        encoder = getattr(self.vae, 'encoder', None)
        if (self.compile_options is not None and self.compile_options['vae']
                and isinstance(encoder, nn.Module)):
            self._compile_once(encoder, device)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] to scaled, sampled latents (identity without a
        VAE)."""
        if self.vae is None:
            return images
        self._prepare_encoder(images.device)
        with self._autocast(images.device):
            posterior = encode_posterior(self.vae, images)
        # torch.randn over the shape, as diffusers' posterior sample.
        noise = torch.randn(posterior[0].shape, device=images.device)
        return (posterior[0] + posterior[1] * noise) * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images in about [-1, 1] (identity without a VAE)."""
        if self.vae is None:
            return latents
        dtype = next(self.vae.parameters()).dtype
        with self._autocast(latents.device):
            images = self.vae.decode((latents / self.latent_scale).to(dtype))
        return images.sample.float()

    def loss(self, inputs: Optional[Tensor],
             data_samples: DataSample) -> Dict[str, Tensor]:
        """DiT's hybrid loss on a batch of images and subclass labels.

        A batch from a latent cache (:class:`LatentDataset`) carries the VAE
        posterior (``latent_mean``, ``latent_std``) instead of images: the
        encoder is skipped and the latent sampled as the encoder would.
        """
        if 'latent_mean' in data_samples:
            # A cache may store half precision: the latent is sampled in
            # float32, as from the encoder.
            mean = data_samples.latent_mean.float()
            std = data_samples.latent_std.to(mean)
            # torch.randn over the shape, as diffusers' posterior sample:
            # randn_like would follow the memory layout of its argument.
            noise = torch.randn(mean.shape, device=mean.device,
                                dtype=mean.dtype)
            x0 = (mean + std * noise) * self.latent_scale
        else:
            x0 = self.encode(inputs)
        losses = self.latent_loss(x0, self._labels(data_samples, x0.device))
        # Kept on the device for nonfinite_report: no synchronisation here.
        self._last_batch = dict(
            finite=torch.isfinite(x0).flatten(1).all(1),
            meta=data_samples.metainfo,
            terms={k: v.detach() for k, v in losses.items()})
        return losses

    def nonfinite_report(self) -> List[str]:
        """The last training batch's loss terms and its samples with
        non-finite latents (from the VAE or a latent cache), by dataset
        index and path (or cache shard and row, when the pipeline packs
        ``latent_path`` and ``latent_row``); read when a step is refused as
        non-finite."""
        batch = getattr(self, '_last_batch', None)
        if batch is None:
            return []
        terms = ', '.join(f'{k} {float(v):.6g}'
                          for k, v in batch['terms'].items())
        lines = [f'loss terms on this rank: {terms}']
        bad = torch.nonzero(~batch['finite']).flatten().tolist()
        if bad:
            meta = batch['meta']
            where = []
            for i in bad:
                index = _item(meta.get('sample_idx'), i)
                # An image's path, or a latent cache's shard and row.
                path = _item(meta.get('gt_path'), i) or _item(
                    meta.get('latent_path'), i)
                row = _item(meta.get('latent_row'), i)
                if row is not None:
                    path = f'{path} row {row}'
                where.append(f'dataset index {index}'
                             + (f' ({path})' if path else ''))
            lines.append(
                f'non-finite latents for {len(bad)} of '
                f'{len(batch["finite"])} samples of this rank\'s batch: '
                f'{"; ".join(where[:8])}')
        return lines

    def latent_loss(self, x0: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """DiT's hybrid loss on latents and subclass labels.

        Args:
            x0 (Tensor): Scaled latents, (N, C, H, W).
            labels (Tensor): Subclass ids, (N, ).

        Returns:
            dict: ``loss`` (summed by MMEngine), ``mse`` and, with learned
            variance, ``vb``, each a scalar.
        """
        # The label dropout is drawn before the timesteps, so that a seed
        # gives the same run as it did when the model drew it itself.
        tiers = self.backbone.token_drop(labels)  # (N, )
        t = self.diffusion.sample_timesteps(len(x0), x0.device)  # (N, )
        self._prepare_backbone(x0.device)

        def backbone(xt: Tensor, steps: Tensor) -> Tensor:
            with self._autocast(xt.device):
                return self.backbone(xt, steps, labels, tiers).float()

        terms = self.diffusion.training_losses(backbone, x0, t)
        # Only keys containing 'loss' are summed; mse and vb (a learned
        # variance's term) are logged.
        return {
            key: value.mean() if key == 'loss' else value.mean().detach()
            for key, value in terms.items()
        }

    @torch.no_grad()
    def sample(self,
               labels: Tensor,
               num_sampling_steps: Optional[int] = None,
               guidance: Optional[TieredGuidance] = None,
               guidance_scale: Union[float, Tensor, None] = None,
               scheduler: Optional[dict] = None,
               generator: Optional[torch.Generator] = None,
               use_ema: bool = True,
               progress: bool = False,
               noise: Optional[Tensor] = None,
               rank: str = 'sub') -> Tensor:
        """Generates images of subclass ``labels`` (or of an ancestor).

        Args:
            labels (Tensor): Subclass ids, (N, ).
            num_sampling_steps (int, optional): Defaults to the model's.
            guidance (TieredGuidance, optional): Defaults to the model's.
            guidance_scale (float or Tensor, optional): Overrides the
                guidance's scale: one value or one per sample (N, ).
            scheduler (dict, optional): A diffusers scheduler config;
                defaults to the model's ``scheduler`` (None: respaced DDPM).
            generator (torch.Generator, optional): For x_T and step noise.
            use_ema (bool): Sample with the EMA weights. Defaults to True.
            progress (bool): Show a progress bar.
            noise (Tensor, optional): x_T, (N, *noise_size); drawn with
                ``generator`` when None.
            rank (str): 'sub' (the labels' rows) or an ancestor rank.
        Returns:
            Tensor: RGB images in [-1, 1], (N, 3, H, W).
        Raises:
            ValueError: For labels outside the class table, a ``noise``
                of another shape, a rank the guidance cannot guide, and
                from :func:`build_sampler`.
        """
        self.backbone.check_labels(labels)
        guidance = guidance or self.guidance
        sampler = build_sampler(self.diffusion, scheduler or self.scheduler,
                                num_sampling_steps or self.num_sampling_steps)
        if noise is None:
            noise = torch.randn((len(labels), *self.noise_size),
                                generator=generator,
                                device=labels.device)  # x_T, (N, C, H, W)
        elif noise.shape != (len(labels), *self.noise_size):
            raise ValueError(
                f'noise of shape {tuple(noise.shape)} given for '
                f'{len(labels)} labels; x_T is (N, *{self.noise_size})')

        # The sampler's state stays float32 when the backbone runs in bf16.
        dtype = self.backbone.pos_embed.dtype
        self._prepare_backbone(labels.device)

        def model_fn(x: Tensor, t: Tensor) -> Tensor:
            with self._autocast(x.device):
                out = guidance(self.backbone, x.to(dtype), t, labels,
                               guidance_scale, rank)
            return out.float()

        with self._ema_weights(use_ema):
            x0 = sampler(model_fn, noise, generator, progress)
        return self.decode(x0).clamp(-1, 1)

    @property
    def noise_size(self) -> Tuple[int, int, int]:
        """The shape of one x_T: (C, H, W) of the backbone's input."""
        grid_h, grid_w = self.backbone.grid
        p = self.backbone.patch_size
        return (self.backbone.in_channels, grid_h * p, grid_w * p)

    def noise_fn(self,
                 noise: Union[Tensor, Callable, None] = None,
                 num_batches: int = 1) -> Tensor:
        """x_T for a generation request, as MMagic's GANs' ``noise_fn``
        (the VisualizationHook's 'GAN' mode draws it once and reuses it):
        ``mmagic.models.utils.noise_sample_fn`` over :attr:`noise_size`.

        Returns:
            Tensor: (num_batches, *noise_size) on the model's device.
        """
        return noise_sample_fn(noise=noise, num_batches=num_batches,
                               noise_size=self.noise_size,
                               device=self.data_preprocessor.device)

    def _ema_weights(self, use_ema: bool) -> ContextManager:
        """The EMA weights swapped into the backbone, when asked for and
        kept; otherwise no change."""
        if use_ema and self.ema is not None:
            return self.ema.swapped_in(self.backbone)
        return nullcontext()

    def predict(self, inputs: Union[dict, Tensor, None],
                data_samples: Optional[DataSample]) -> List[DataSample]:
        """Generated images, following MMagic's conditional GANs
        (``BaseConditionalGAN.forward``).

        Args:
            inputs (dict or Tensor, optional): MMagic's generation request:
                ``num_batches``, ``noise`` (x_T, see :meth:`noise_fn`),
                ``img`` (real images, kept as ``gt_img``), ``sample_model``
                ('ema', 'orig' or 'ema/orig': both, as ``ema`` and ``orig``
                fields) and
                ``sample_kwargs`` (``num_sampling_steps``, ``guidance_scale``,
                ``scheduler``, ``guidance`` as a :class:`TieredGuidance`
                config); a Tensor (a batch of real images, as a test loader
                gives) only sets the batch size.
            data_samples (DataSample, optional): The requested labels
                (``gt_label``). Without labels, subclass labels are drawn
                uniformly from the class table, as MMagic's conditional GANs
                do for noise-driven metrics and the ``VisualizationHook``.

        Returns:
            list[DataSample]: One per image: the input sample's fields (its
            ``gt_img`` for metrics that compare), ``fake_img`` (BGR in
            [0, 255] at whole levels, MMagic's generation metrics' form),
            ``gt_label``, ``sample_model`` and ``sample_kwargs``.

        Raises:
            ValueError: For an unknown ``sample_model``, a ``num_batches``
                that is not a positive int, ``noise`` of another shape than
                (N, *noise_size), ``sample_kwargs`` that set what the
                request sets (``use_ema``, ``noise``), and from
                :meth:`sample`.
        """
        request = inputs if isinstance(inputs, dict) else {}
        if isinstance(data_samples, list):
            data_samples = DataSample.stack(data_samples)
        sample_model = _sample_model(request)
        options = _sample_options(request.get('sample_kwargs'))
        labels = self._requested_labels(inputs, data_samples)
        noise = self._requested_noise(request.get('noise'), len(labels))
        batch = _request_fields(request, data_samples)
        if sample_model == 'ema/orig':
            # Both from one x_T, as MMagic's GANs compare them.
            if noise is None:
                noise = self.noise_fn(num_batches=len(labels))
            for name in ('ema', 'orig'):
                images = self._fake_images(labels, name == 'ema', noise,
                                           options, data_samples)
                batch.set_field(DataSample(fake_img=images), name)
        else:
            batch.fake_img = self._fake_images(labels, sample_model == 'ema',
                                               noise, options, data_samples)
        batch.set_gt_label(labels)
        if noise is not None:
            batch.noise = noise
        batch.sample_model = sample_model
        batch.sample_kwargs = deepcopy(request.get('sample_kwargs') or {})
        return batch.split(allow_nonseq_value=True)

    def _fake_images(self, labels: Tensor, use_ema: bool,
                     noise: Optional[Tensor], options: dict,
                     data_samples: Optional[DataSample]) -> Tensor:
        """Samples as MMagic's generation metrics take them: (N, 3, H, W)
        BGR in [0, 255], at whole levels as DiT stores samples for FID
        (MMagic's FID truncates floats to uint8, which would darken every
        sample by half a level on average)."""
        images = self.sample(labels, use_ema=use_ema, noise=noise, **options)
        return self.data_preprocessor.destruct(images, data_samples).round()

    def _requested_labels(self, inputs: Union[dict, Tensor, None],
                          data_samples: Optional[DataSample]) -> Tensor:
        """The subclass labels of a request, (N, ): the samples' own, or N
        uniform draws (N from ``num_batches``, the tensors or samples)."""
        device = self.data_preprocessor.device
        if data_samples and 'gt_label' in data_samples:
            return self._labels(data_samples, device)
        if isinstance(inputs, dict) and 'num_batches' in inputs:
            count = inputs['num_batches']
            if isinstance(count, bool) or not isinstance(count, int) \
                    or count < 1:
                raise ValueError(
                    f'num_batches must be a positive int, got {count!r}')
        num_batches = get_valid_num_batches(inputs, data_samples)
        return torch.randint(self.backbone.num_classes, (num_batches, ),
                             device=device)

    def _requested_noise(self, noise: Union[Tensor, Callable, None],
                         count: int) -> Optional[Tensor]:
        """x_T of a request, (count, *noise_size), or None (drawn later)."""
        if noise is None:
            return None
        shape = (count, *self.noise_size)
        if isinstance(noise, Tensor) and tuple(noise.shape) != shape:
            raise ValueError(f'noise of shape {tuple(noise.shape)} given '
                             f'for {count} images; x_T is {shape}')
        return self.noise_fn(noise, num_batches=count)

    @staticmethod
    def _labels(data_samples: DataSample, device: torch.device) -> Tensor:
        return data_samples.gt_label.label.to(device).long().flatten()

    def forward(self,
                inputs: Optional[Tensor],
                data_samples: Optional[DataSample] = None,
                mode: str = 'loss') -> Union[Dict[str, Tensor], List]:
        """``loss``: training losses; ``predict``: generated samples."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ValueError(f"FineDiffusion supports modes 'loss' and "
                         f"'predict', got {mode!r}")



def _check_class_table_trains(backbone: nn.Module, trainable) -> None:
    """Refuses a trainable set that freezes the class table."""
    if not backbone.class_table.requires_grad:
        # The table is new (the base DiT's rows are ImageNet's classes,
        # never loaded): frozen, it would stay at its random init, which
        # checkpoints and deltas, holding only trained tensors, do not
        # save, so that every load would condition on other noise.
        raise ValueError(
            f'trainable={trainable!r} leaves the class table '
            f'({CLASS_TABLE}) frozen at its random initialization; add '
            f"'{CLASS_PARAMS}' (BitFit of a new taxonomy: "
            f"['{CLASS_PARAMS}', '*.bias'])")

def _request_fields(request: dict,
                    data_samples: Optional[DataSample]) -> DataSample:
    """What an output keeps of its request: the samples' fields and the
    real images (``inputs['img']``) as ``gt_img``, as MMagic's GANs do."""
    batch = DataSample()
    if data_samples:
        batch.update(data_samples)
    if isinstance(request.get('img'), Tensor):
        batch.gt_img = request['img']
    return batch


def _sample_model(request: dict) -> str:
    """The weights a request names: 'ema' (the default), 'orig' or both."""
    sample_model = request.get('sample_model', 'ema')
    if sample_model not in SAMPLE_MODELS:
        raise ValueError(f'sample_model must be one of {SAMPLE_MODELS}, '
                         f'got {sample_model!r}')
    return sample_model


def _sample_options(sample_kwargs: Optional[dict]) -> dict:
    """:meth:`FineDiffusion.sample` keyword arguments of a request's
    ``sample_kwargs``, a ``guidance`` config built."""
    options = dict(sample_kwargs or {})
    for key, instead in (('use_ema', 'sample_model'), ('noise', 'noise')):
        if key in options:
            raise ValueError(f'sample_kwargs may not set {key!r}: give the '
                             f'request\'s {instead!r} instead')
    if isinstance(options.get('guidance'), dict):
        options['guidance'] = TieredGuidance(**options['guidance'])
    return options


def encode_posterior(vae: nn.Module, images: Tensor):
    """The VAE posterior of images, in float32.

    The encoder runs in the VAE's dtype (an fp16 VAE takes fp16 images) or
    the caller's autocast; the posterior is formed from its moments in
    float32 (as ``DiagonalGaussianDistribution``: log-variance clamped to
    [-30, 20]), so that bf16 convolutions round the moments once, not the
    standard deviation's exponential too.

    Args:
        vae (nn.Module): A diffusers ``AutoencoderKL`` (or MMagic's wrapper
            of one).
        images (Tensor): RGB in [-1, 1], (N, 3, H, W).

    Returns:
        tuple[Tensor, Tensor]: Mean and standard deviation of the unscaled
        latents, float32, (N, C, H / f, W / f).
    """
    dtype = next(vae.parameters()).dtype
    moments = vae.encoder(images.to(dtype))
    if getattr(vae, 'quant_conv', None) is not None:
        moments = vae.quant_conv(moments)
    mean, logvar = moments.float().chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))


def _autocast_dtypes(autocast) -> Dict[str, torch.dtype]:
    """``autocast`` as {device type: dtype}; a plain dtype name holds for
    every device type."""
    if autocast is None:
        return {}
    per_device = (dict(autocast) if isinstance(autocast, dict) else
                  dict(cpu=autocast, cuda=autocast))
    dtypes = {}
    for device, name in per_device.items():
        dtype = getattr(torch, str(name), None)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError('autocast must name a floating torch dtype '
                             f"such as 'bfloat16', got {name!r}")
        dtypes[device] = dtype
    return dtypes


def _compile_options(compile) -> Optional[dict]:
    """``compile`` as {devices, vae, kwargs of torch.compile}, None when
    off."""
    if compile is False or compile is None:
        return None
    options = {} if compile is True else dict(compile)
    devices = tuple(options.pop('devices', ('cuda', )))
    vae = options.pop('vae', True)
    if not isinstance(vae, bool):
        raise ValueError(f'compile vae must be True or False, got {vae!r}')
    unknown = [d for d in devices if d not in ('cpu', 'cuda')]
    if unknown:
        raise ValueError(f"compile devices must be 'cpu' or 'cuda', got "
                         f'{unknown}')
    return dict(devices=devices, vae=vae, kwargs=options)


def _check_rgb(preprocessor: nn.Module) -> None:
    """Refuses an MMagic preprocessor that would not hand the model RGB."""
    if not isinstance(preprocessor, DataPreprocessor):
        return
    if not (isinstance(preprocessor, DiTDataPreprocessor)
            and preprocessor.output_channel_order == 'RGB'):
        raise ValueError(
            'FineDiffusion takes and generates RGB images: its '
            "data_preprocessor must be dict(type='DiTDataPreprocessor') "
            "with output_channel_order='RGB' (the default), got "
            f'{type(preprocessor).__name__} with output_channel_order='
            f'{preprocessor.output_channel_order!r}')


def _item(values, index: int):
    """Entry ``index`` of a batch's metainfo list (None if absent)."""
    if isinstance(values, (list, tuple)) and index < len(values):
        return values[index]
    return None


def _build(cfg: ModelType) -> nn.Module:
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg
