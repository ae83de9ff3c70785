"""An infinite training sampler that can start anywhere in its stream, with
each sample's augmentations seeded by its place in that stream.

Resuming at iteration ``n`` then costs no data loading: the sampler starts at
draw ``n * batch_size`` of each rank (``ResumableIterBasedTrainLoop`` does
it), and the samples drawn from there are augmented as in an uninterrupted
run, whatever the data-loader workers did before.
"""
import itertools
import random
from typing import Iterator, List, Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dataset import InfiniteSampler

from mmagic.registry import DATA_SAMPLERS


class SampleIndex(int):
    """A dataset index that carries its draw: its position in the sampler's
    stream over all ranks (rank ``r``'s ``p``-th sample is draw
    ``r + p * world_size``). It indexes like the int it is."""

    draw: int

    def __new__(cls, index: int, draw: int) -> 'SampleIndex':
        obj = super().__new__(cls, index)
        obj.draw = draw
        return obj

    def __reduce__(self):
        # Crosses to data-loader workers through their index queues.
        return SampleIndex, (int(self), self.draw)

    def __repr__(self) -> str:
        return f'SampleIndex({int(self)}, draw={self.draw})'


def _seed_global_rngs(seed: int, draw: int) -> None:
    """Seeds Python's, NumPy's and torch's global CPU generators from
    (sampler seed, draw) alone, through a NumPy SeedSequence (so nearby
    draws get unrelated streams)."""
    high, low = np.random.SeedSequence([seed, draw]).generate_state(
        2, np.uint32)
    np.random.seed(int(low))
    random.seed(int(high) << 32 | int(low))
    # The CPU generator alone: torch.manual_seed would also reseed every
    # CUDA device, whose state the training's noise is drawn from.
    torch.default_generator.manual_seed(int(high) << 32 | int(low))


class DrawSeededItems:
    """``dataset.__getitems__`` for a dataset sampled by
    :class:`ResumableInfiniteSampler`: loads each sample of a batch with the
    global random generators seeded by its draw, and puts the caller's
    generator states back after the batch.

    PyTorch's map-style fetcher calls ``dataset.__getitems__(indices)`` for
    a batch when the dataset has one; set on the instance, it works for any
    dataset class. Everything random in ``dataset[index]`` (the transforms,
    BaseDataset's ``_rand_another`` retry after a failed sample) then
    depends on the draw only, not on what the process loaded before; and in
    the main process (``num_workers=0``) the training's own random stream
    (timesteps, noise, label dropout) is not disturbed by data loading.
    Plain int indices (another sampler's) are loaded without seeding.

    Args:
        dataset (Sized): The dataset; its own ``__getitem__`` loads a sample.
        seed (int): The sampler's seed, the same on every rank.
    """

    def __init__(self, dataset: Sized, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __call__(self, indices: Sequence[int]) -> List:
        if not any(isinstance(index, SampleIndex) for index in indices):
            return [self.dataset[index] for index in indices]
        # Saved once per batch: NumPy's state takes longer to copy than a
        # small image to decode.
        states = (random.getstate(), np.random.get_state(),
                  torch.get_rng_state())
        try:
            return [self._load(index) for index in indices]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

    def _load(self, index: int):
        if isinstance(index, SampleIndex):
            _seed_global_rngs(self.seed, index.draw)
            index = int(index)
        return self.dataset[index]


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(InfiniteSampler):
    """MMEngine's InfiniteSampler (same order: one permutation per epoch
    from the shared seed, dealt to the ranks in turn) that can start at any
    position of its rank's stream without generating the samples before it,
    and whose samples are augmented from their draw alone.

    Each yielded index is a :class:`SampleIndex`; the sampler sets
    :class:`DrawSeededItems` as its dataset's ``__getitems__``, so that the
    data loader, with or without workers, loads each sample with the global
    generators seeded by (seed, draw). A dataset class with its own
    ``__getitems__`` is then read one sample at a time.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Whether each epoch is a random permutation.
            Defaults to True.
        seed (int, optional): The seed shared by all ranks; None draws one
            on rank 0 and broadcasts it (MMEngine's ``sync_random_seed``).
            Defaults to None.
    """

    def __init__(self,
                 dataset: Sized,
                 shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed)
        dataset.__getitems__ = DrawSeededItems(dataset, self.seed)

    def _indices_of_rank(self, start: int = 0) -> Iterator[SampleIndex]:
        """This rank's indices from its ``start``-th sample on.

        Whole epochs before the start are skipped by drawing their
        permutations only (one ``randperm`` each), no sample is produced.
        """
        first = self.rank + start * self.world_size
        epoch, offset = divmod(first, self.size)
        draws = itertools.count(first, self.world_size)
        indices = itertools.islice(self._epochs_from(epoch), offset, None,
                                   self.world_size)
        for draw, index in zip(draws, indices):
            yield SampleIndex(index, draw)

    def _epochs_from(self, first: int) -> Iterator[int]:
        """The stream of all ranks from epoch ``first`` on."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        for epoch in itertools.count():
            order = (torch.randperm(self.size, generator=generator)
                     if self.shuffle else None)
            if epoch >= first:
                yield from (order.tolist() if self.shuffle else range(
                    self.size))

    def start_at(self, position: int) -> None:
        """Makes this rank's next index its ``position``-th (0-based), as if
        ``position`` samples had been drawn."""
        self.indices = self._indices_of_rank(position)

    def start_at_draw(self, draw: int) -> None:
        """Continues the stream of all ranks at draw ``draw`` (0-based), as
        if ``draw`` samples had been drawn over all ranks, whatever the
        world size that drew them: this rank's next index is its first draw
        at or after ``draw``."""
        # The smallest p with rank + p * world_size >= draw.
        self.start_at(max(0, -(-(draw - self.rank) // self.world_size)))

    def pause(self) -> None:
        """Yields nothing until :meth:`start_at`: a data-loader iterator
        made meanwhile takes (and prefetches) no sample."""
        self.indices = iter(())
