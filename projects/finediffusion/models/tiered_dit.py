"""DiT (Peebles & Xie, 2023) whose class table is a :class:`TieredEmbedder`.

Module and parameter names follow the official DiT release, so its
checkpoints load by name; the LayerNorms can be made affine (identity at
init) so that FineDiffusion's PEFT can train their scale and offset.
Subclass labels go down into the model once; the embedder owns label
dropout and the backbone owns guidance (:meth:`TieredDiT.forward_with_cfg`),
as DiT's ``models.py``.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmagic.registry import MODELS
from ..taxonomy import Taxonomy, read_taxonomy
from .dit_checkpoint import (DIT_TRAINING_WEIGHTS, IMAGENET_TABLE,
                             load_official_dit)
from .tiered_embedder import TieredEmbedder, Tiers

# (depth, hidden size, heads) of the published model sizes.
DIT_SIZES = {
    'S': (12, 384, 6),
    'B': (12, 768, 12),
    'L': (24, 1024, 16),
    'XL': (28, 1152, 16),
}
CLASS_INITS = ('normal', 'null')

# Names in the backbone's state dict, for the modules that select, save or
# load its tensors by name (PEFT presets, checkpoints, deltas).
CLASS_EMBEDDER = 'y_embedder'
CLASS_PARAMS = f'{CLASS_EMBEDDER}.*'
CLASS_TABLE = f'{CLASS_EMBEDDER}.embedding_table.weight'
TAXONOMY_BUFFER = f'{CLASS_EMBEDDER}.sub2super'

TaxonomySpec = Union[Taxonomy, Sequence[int], Mapping]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation of tokens (N, T, D) by per-sample shift and scale."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """[sin | cos] embedding of positions, DiT/MAE frequency layout."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.)
    angles = positions.double().reshape(-1, 1) / 10000**omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D position embedding of a (grid_h, grid_w) patch grid.

    The first half encodes the column and the second half the row: this is
    the layout of the released DiT checkpoints (a meshgrid in x, y order).
    """
    rows, cols = torch.meshgrid(
        torch.arange(grid_h), torch.arange(grid_w), indexing='ij')
    return torch.cat(
        [sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the diffusion step followed by an MLP."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(
            half, dtype=torch.float32, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        features = torch.cat([angles.cos(), angles.sin()], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to tokens by a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int,
                 hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads,
                                      d // self.num_heads).permute(2, 0, 3, 1, 4)
        if q.device.type == 'cpu' and q.dtype == torch.bfloat16:
            # PyTorch's CPU flash attention runs its backward about ten
            # times slower in bf16 than in float32 (19 ms against 2 ms per
            # call for the demo's DiT on 2 cores); autocast would cast back.
            with torch.autocast('cpu', enabled=False):
                x = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float()).to(q.dtype)
        else:
            x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """Two-layer MLP with tanh-approximated GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate='tanh')
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Transformer block conditioned by adaLN-Zero (shift, scale, gate)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float,
                 affine_norms: bool, block_scales: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(
            hidden_size, eps=1e-6, elementwise_affine=affine_norms)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(
            hidden_size, eps=1e-6, elementwise_affine=affine_norms)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        if block_scales:
            # DiffFit's learnable residual scales, identity at init.
            self.scale_attn = nn.Parameter(torch.ones(1))
            self.scale_mlp = nn.Parameter(torch.ones(1))
        else:
            self.scale_attn = self.scale_mlp = None

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        (shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp,
         gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=1)
        attn = gate_attn.unsqueeze(1) * self.attn(
            modulate(self.norm1(x), shift_attn, scale_attn))
        x = x + (attn if self.scale_attn is None else self.scale_attn * attn)
        mlp = gate_mlp.unsqueeze(1) * self.mlp(
            modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + (mlp if self.scale_mlp is None else self.scale_mlp * mlp)


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map from tokens to patches."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int,
                 affine_norms: bool) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(
            hidden_size, eps=1e-6, elementwise_affine=affine_norms)
        self.linear = nn.Linear(hidden_size,
                                patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


@MODELS.register_module()
class TieredDiT(BaseModule):
    """Diffusion Transformer conditioned on subclass labels through a
    tiered class table: a row per subclass, per ancestor at each rank of
    the taxonomy (superclass included) and optionally a null row.

    Args:
        taxonomy (Taxonomy, Sequence[int] or dict): The taxonomy the class
            table has rows for: a :class:`~finediffusion.taxonomy.Taxonomy`,
            the superclass id of every subclass (two tiers), or a dataset's
            taxonomy spec, read from its annotation files by the dataset
            class (e.g. ``dict(type='INat2021Dataset', data_root=...,
            ann_file='train_mini.json', ranks=('genus', 'family',
            'supercategory'))``; see
            :func:`~finediffusion.taxonomy.read_taxonomy`). Every rank of
            the taxonomy gets rows.
        num_classes (int, optional): Number of subclasses; defaults to the
            length of the taxonomy.
        arch (str or dict): Model size, one of 'S', 'B', 'L', 'XL', or a dict
            with ``depth``, ``hidden_size`` and ``num_heads`` (tiny models for
            tests and demos). Defaults to 'XL'.
        patch_size (int): Patch size, 2, 4 or 8. Defaults to 2.
        input_size (int or tuple[int, int]): Spatial size of the input
            (latent) image. Defaults to 32 (256 px images through the SD-VAE).
        in_channels (int): Input channels. Defaults to 4 (SD-VAE latents).
        learn_sigma (bool): Also predict the variance interpolation, which
            doubles the output channels. Defaults to True.
        mlp_ratio (float): MLP width over hidden size. Defaults to 4.
        affine_norms (bool): Give every LayerNorm a scale and offset
            (identity at init). Defaults to True.
        block_scales (bool): Give every block DiffFit's learnable scales of
            its two residual branches (1 at init). Defaults to False.
        super_prob (float): Training probability of replacing a label by its
            superclass. Defaults to 0.1.
        null_prob (float, optional): Training probability of replacing a label
            by a null row (standard CFG); None builds no null row.
        rank_probs (dict, optional): Training probability of replacing a
            label by its ancestor at each rank below the superclass, by rank
            name (e.g. ``dict(genus=0.1, family=0.05)``); 0.1 for a rank not
            named.
        pretrained (str, optional): An official DiT checkpoint, or a
            training checkpoint of DiT's or fast-DiT's ``train.py``, loaded
            by :meth:`init_weights` after the random initialization.
        pretrained_weights (str): Which weights of such a training
            checkpoint: 'ema' (what DiT's ``sample.py`` uses) or 'model'
            (the raw trained weights); unused for a released state dict.
            Defaults to 'ema'.
        class_init (str): Where the class table's rows start: 'normal'
            (DiT's zero-mean normal) or 'null', the pretrained checkpoint's
            null row (the last row of its table, DiT's unconditional class)
            plus normal noise, so that every new class starts by drawing
            what the base model draws unconditionally rather than a random
            mixture of base classes. Defaults to 'normal'.
        class_init_std (float or str): Standard deviation of that normal
            noise; DiT's 0.02 by default. 'base' takes the standard deviation
            of the pretrained checkpoint's class table, so that new classes
            start at the scale the frozen network was trained with. A larger
            value (e.g. 1) makes the class signal comparable to the
            timestep's from the first step, for short schedules.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 taxonomy: TaxonomySpec = (),
                 num_classes: Optional[int] = None,
                 arch: Union[str, Dict[str, int]] = 'XL',
                 patch_size: int = 2,
                 input_size: Union[int, Tuple[int, int]] = 32,
                 in_channels: int = 4,
                 learn_sigma: bool = True,
                 mlp_ratio: float = 4.0,
                 affine_norms: bool = True,
                 block_scales: bool = False,
                 super_prob: float = 0.1,
                 null_prob: Optional[float] = None,
                 rank_probs: Optional[Dict[str, float]] = None,
                 pretrained: Optional[str] = None,
                 pretrained_weights: str = 'ema',
                 class_init: str = 'normal',
                 class_init_std: Union[float, str] = 0.02,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_init_options(pretrained, pretrained_weights, class_init,
                            class_init_std)
        depth, hidden_size, num_heads = _arch_sizes(arch)
        named = (read_taxonomy(taxonomy) if isinstance(
            taxonomy, (Mapping, Taxonomy)) else Taxonomy([], [], []))
        sub2super = named.sub2super or list(taxonomy)
        self.super_rank = named.super_rank  # a name of the 'super' tier
        self.patch_size = patch_size
        self.grid = _patch_grid(input_size, patch_size)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.pretrained = pretrained
        self.pretrained_weights = pretrained_weights
        self.class_init = class_init
        self.class_init_std = class_init_std

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = TieredEmbedder(
            len(sub2super) if num_classes is None else num_classes,
            sub2super,
            hidden_size,
            super_prob=super_prob,
            null_prob=null_prob,
            ancestors=dict(zip(named.ranks[:-1], named.rank_tables)),
            ancestor_probs=rank_probs)
        # A frozen parameter rather than a buffer: the official checkpoints
        # store it and DiT's parameter counts include it.
        self.pos_embed = nn.Parameter(
            sincos_2d(hidden_size, *self.grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList([
            DiTBlock(hidden_size, num_heads, mlp_ratio, affine_norms,
                     block_scales) for _ in range(depth)
        ])
        self.final_layer = FinalLayer(hidden_size, patch_size,
                                      self.out_channels, affine_norms)
        # At construction, not when the Runner initializes the model: the
        # pretrained weights must also be there for test-only runs, which
        # skip initialization. Marked initialized, the Runner leaves them be.
        self.init_weights()

    def init_weights(self) -> None:
        """DiT's initialization, then the official checkpoint if given.

        adaLN-Zero: every modulation and the output projection start at
        zero, so each block starts as the identity.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, DiTBlock) and module.scale_attn is not None:
                nn.init.ones_(module.scale_attn)
                nn.init.ones_(module.scale_mlp)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        table = self.class_table
        nn.init.normal_(
            table,
            std=0.02 if self.class_init_std == 'base' else
            self.class_init_std)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for param in (*self.final_layer.adaLN_modulation[-1].parameters(),
                      *self.final_layer.linear.parameters()):
            nn.init.zeros_(param)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(self.pos_embed.shape[-1],
                                           *self.grid)[None])
        if self.pretrained:
            loaded = self.load_official(self.pretrained)
            base_table = loaded['class_table']
            if base_table is None and (self.class_init == 'null' or
                                       self.class_init_std == 'base'):
                raise ValueError(
                    f'class_init={self.class_init!r}, class_init_std='
                    f'{self.class_init_std!r}: {self.pretrained} has no class '
                    f'table ({IMAGENET_TABLE})')
            if self.class_init_std == 'base':
                nn.init.normal_(table, std=base_table.float().std().item())
            if self.class_init == 'null':
                with torch.no_grad():
                    table.add_(base_table[-1].to(table))
        self._is_init = True

    def load_official(self, path: str) -> dict:
        """Loads an official DiT checkpoint (see :func:`load_official_dit`)."""
        return load_official_dit(self, path, self.pretrained_weights)

    @property
    def num_classes(self) -> int:
        """Number of subclasses (rows ``[0, num_classes)`` of the table)."""
        return self.y_embedder.num_classes

    @property
    def sub2super(self) -> Tensor:
        """Superclass id of every subclass, (num_classes, ), long."""
        return self.y_embedder.sub2super

    @property
    def ranks(self) -> List[str]:
        """The tiers of the class table from finest to coarsest: 'sub', the
        ranks below the superclass, the superclass rank's name ('super' when
        unnamed), and 'null' when the table has a null row."""
        return [self.super_rank if t == 'super' else t
                for t in self.y_embedder.tier_names]

    def tier(self, rank: str) -> str:
        """The embedder's tier name of a rank name ('super' for the
        superclass rank's name).

        Raises:
            ValueError: For a rank this model's table has no rows of.
        """
        tier = 'super' if rank == self.super_rank else rank
        self.y_embedder.tier_id(tier)
        return tier

    @property
    def has_null_class(self) -> bool:
        """Whether the table has a null row (trained with ``null_prob``)."""
        return self.y_embedder.has_null

    @property
    def class_table(self) -> nn.Parameter:
        """The tiered class table, (rows, hidden_size)."""
        return self.y_embedder.embedding_table.weight

    def check_labels(self, labels: Tensor) -> None:
        """Refuses subclass labels outside the table, naming them (see
        :meth:`TieredEmbedder.check_labels`)."""
        self.y_embedder.check_labels(labels)

    def token_drop(self, labels: Tensor) -> Tensor:
        """This training step's tier of each label (super/null dropout),
        drawn by the embedder (see :meth:`TieredEmbedder.token_drop`)."""
        return self.y_embedder.token_drop(labels)

    def unpatchify(self, x: Tensor) -> Tensor:
        """Tokens (N, T, p*p*C) back to images (N, C, H, W)."""
        p, (h, w), c = self.patch_size, self.grid, self.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor,
                tiers: Tiers = None) -> Tensor:
        """Predicts noise (and variance values) for a batch.

        Args:
            x (Tensor): Noisy latents, (N, C, H, W).
            t (Tensor): Diffusion steps, (N, ).
            y (Tensor): Subclass labels, (N, ).
            tiers (str or Tensor, optional): The tier each label is embedded
                at: one of 'sub', 'super', 'null', a tier id per label (N, ),
                or None: the embedder's label dropout in training, the
                labels' own rows in eval mode.

        Returns:
            Tensor: (N, out_channels, H, W): epsilon, then the variance
            values when the model learns them.
        """
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D), T = H * W / p^2
        c = self.t_embedder(t) + self.y_embedder(y, tiers)  # (N, D)
        for block in self.blocks:
            x = block(x, c)  # (N, T, D)
        x = self.final_layer(x, c)  # (N, T, p * p * out_channels)
        return self.unpatchify(x)  # (N, out_channels, H, W)

    def forward_with_cfg(self,
                         x: Tensor,
                         t: Tensor,
                         y: Tensor,
                         scale: Union[float, Tensor],
                         reference: str = 'super',
                         guided_channels: Optional[int] = None,
                         rank: str = 'sub') -> Tensor:
        """Classifier-free guidance against a reference tier, in one
        batched forward of the conditional and the reference halves.

        eps = eps(x, t, ref) + s * (eps(x, t, sub) - eps(x, t, ref)), with
        ref the superclass (FineDiffusion's fine-grained CFG, Pan et al.
        2024, Eq. 6), the null row (standard CFG, Ho & Salimans 2022) or
        any rank between. The variance channels pass through from the
        conditional half. :meth:`forward_with_hierarchical_cfg` with one
        reference.

        Args:
            x (Tensor): Noisy latents, (N, C, H, W).
            t (Tensor): Diffusion steps, (N, ).
            y (Tensor): Subclass labels, (N, ).
            scale (float or Tensor): Guidance scale s, one value or one per
                sample (N, ).
            reference (str): A tier coarser than ``rank``: 'super' (or the
                superclass rank's name), a rank between, or 'null'.
            guided_channels (int, optional): Guide only the first k channels
                and take the rest of epsilon from the conditional half: DiT's
                ``forward_with_cfg`` guides 3 of the 4 latent channels, a
                quirk of its release that its published samples have. None
                guides all.
            rank (str): The tier the labels are drawn at: 'sub' (their own
                rows) or an ancestor's rank.

        Returns:
            Tensor: (N, out_channels, H, W).

        Raises:
            ValueError: From :meth:`forward_with_hierarchical_cfg`.
        """
        return self.forward_with_hierarchical_cfg(x, t, y, [reference],
                                                  [scale], guided_channels,
                                                  rank)

    def forward_with_hierarchical_cfg(
            self,
            x: Tensor,
            t: Tensor,
            y: Tensor,
            references: Sequence[str],
            scales: Sequence[Union[float, Tensor]],
            guided_channels: Optional[int] = None,
            rank: str = 'sub') -> Tensor:
        """Guidance from coarse to fine ranks, in one batched forward.

        eps = eps(r_0) + sum_k s_k * (eps(r_k) - eps(r_{k-1})), k = 1..K,
        with r_0 .. r_{K-1} the ``references`` and r_K = ``rank`` (the
        labels' own rows by default): each step guides from one rank to the
        next finer one with its own scale. One reference is classifier-free
        guidance against it (:meth:`forward_with_cfg`).

        Args:
            x (Tensor): Noisy latents, (N, C, H, W).
            t (Tensor): Diffusion steps, (N, ).
            y (Tensor): Subclass labels, (N, ).
            references (Sequence[str]): K tiers, strictly coarse to fine and
                coarser than ``rank``, e.g. ``['null', 'family', 'genus']``.
            scales (Sequence[float or Tensor]): K scales s_1 .. s_K, each
                one value or one per sample (N, ).
            guided_channels (int, optional): As in :meth:`forward_with_cfg`.
            rank (str): The tier the labels are drawn at.

        Returns:
            Tensor: (N, out_channels, H, W).

        Raises:
            ValueError: For an unknown tier, 'null' without a null row,
                references not strictly coarse to fine above ``rank``, or a
                scale count other than the reference count.
        """
        tiers = self.guidance_tiers(rank, references, scales)
        embedder = self.y_embedder
        n = len(tiers)
        ids = torch.cat([torch.full_like(y, embedder.tier_id(tier))
                         for tier in tiers])
        out = self(x.repeat(n, 1, 1, 1), t.repeat(n), y.repeat(n),
                   ids)  # (n * N, out_channels, H, W)
        cond, *refs = out.chunk(n)
        k = guided_channels or x.shape[1]
        finer = refs[1:] + [cond]
        guided = refs[0][:, :k]
        for coarse, fine, scale in zip(refs, finer, scales):
            if isinstance(scale, Tensor):
                scale = scale.to(out).reshape(-1, 1, 1, 1)
            guided = guided + scale * (fine[:, :k] - coarse[:, :k])
        return torch.cat([guided, cond[:, k:]], dim=1)


    def guidance_tiers(self, rank: str, references: Sequence[str],
                        scales: Sequence) -> List[str]:
        """The tiers of a guided forward, ``rank`` first.

        Raises:
            ValueError: As :meth:`forward_with_hierarchical_cfg`: a rank
                this model lacks, references not coarse to fine or not
                coarser than ``rank``, a scale count other than the
                reference count, the null row of a model without one.
        """
        tiers = [self.tier(r) for r in [rank, *references]]
        if len(scales) != len(references) or not references:
            raise ValueError(f'{len(references)} guidance references but '
                             f'{len(scales)} scales: give one scale each')
        order = [self.y_embedder.coarseness(tier) for tier in tiers]
        if any(a <= b for a, b in zip(order[1:], order[2:])) or (
                order[1] <= order[0]):
            raise ValueError(
                f'guidance references {list(references)} must run from '
                f'coarse to fine and all be coarser than {rank!r}; this '
                f"model's tiers from fine to coarse: {self.ranks}")
        if 'null' in tiers and not self.has_null_class:
            raise ValueError(
                'guidance against the null row needs one: train the '
                "TieredDiT with null_prob (e.g. 0.1), or guide from a rank")
        return tiers


def _arch_sizes(arch: Union[str, Dict[str, int]]) -> Tuple[int, int, int]:
    """(depth, hidden size, heads) of a published size or a dict of them."""
    if isinstance(arch, dict):
        return arch['depth'], arch['hidden_size'], arch['num_heads']
    if arch in DIT_SIZES:
        return DIT_SIZES[arch]
    raise ValueError(f'arch must be one of {list(DIT_SIZES)} or a dict, got '
                     f'{arch!r}')


def _patch_grid(input_size: Union[int, Tuple[int, int]],
                patch_size: int) -> Tuple[int, int]:
    """(rows, columns) of patches of an input (latent) size."""
    height, width = ((input_size, input_size) if isinstance(
        input_size, int) else tuple(input_size))
    if height % patch_size or width % patch_size:
        raise ValueError(f'input_size {input_size} is not a multiple of '
                         f'patch_size {patch_size}')
    return height // patch_size, width // patch_size


def _check_init_options(pretrained: Optional[str], pretrained_weights: str,
                        class_init: str,
                        class_init_std: Union[float, str]) -> None:
    """Refuses initialization options that name no choice, or that need a
    pretrained checkpoint the model is not given."""
    if pretrained_weights not in DIT_TRAINING_WEIGHTS:
        raise ValueError(
            f'pretrained_weights must be one of {DIT_TRAINING_WEIGHTS}, '
            f'got {pretrained_weights!r}')
    if class_init not in CLASS_INITS:
        raise ValueError(f'class_init must be one of {CLASS_INITS}, got '
                         f'{class_init!r}')
    for name, value in (('class_init', class_init),
                        ('class_init_std', class_init_std)):
        if value in ('base', 'null') and not pretrained:
            raise ValueError(f'{name}={value!r} needs a pretrained '
                             'checkpoint')
