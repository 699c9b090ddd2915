"""N-way K-shot episode sampling as batched tensors, and the fixed dev/test episode sets.

Sampling draws indices with a CPU ``torch.Generator`` (so episodes are identical on CPU and GPU) and
gathers all images of a meta-batch with one indexing operation on the device: no per-image Python loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np
import torch
from torch import Tensor

from .data import DRAWINGS, ClassSet
from .errors import ConfigError


@dataclass(frozen=True)
class Episode:
    """A meta-batch of tasks. Images are float ink in [0, 1]; labels are a fresh permutation per task.

    Attributes:
        support_x: ``(tasks, ways*shots, 1, H, W)``; support_y: ``(tasks, ways*shots)``.
        query_x: ``(tasks, ways*query, 1, H, W)``; query_y: ``(tasks, ways*query)``.
        class_ids: ``(tasks, ways)``: the split-level label of each task's label ``0..ways-1``
            (character and rotation), used by multi-task pre-training.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    class_ids: Tensor

    @property
    def tasks(self) -> int:
        return int(self.support_x.shape[0])

    def chunks(self, size: int) -> Iterator[Episode]:
        """The meta-batch in consecutive slices of ``size`` tasks (views, no copy)."""
        for start in range(0, self.tasks, size):
            part = slice(start, start + size)
            yield Episode(self.support_x[part], self.support_y[part], self.query_x[part], self.query_y[part],
                          self.class_ids[part])


@dataclass(frozen=True)
class EpisodeIndex:
    """What identifies a meta-batch of episodes, independent of device: CPU int64 tensors."""

    classes: Tensor  # (tasks, ways) indices into the ClassSet, in label order
    rotations: Tensor  # (tasks, ways) quarter turns
    drawings: Tensor  # (tasks, ways, shots + query)

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def slice(self, start: int, stop: int) -> EpisodeIndex:
        return EpisodeIndex(self.classes[start:stop], self.rotations[start:stop], self.drawings[start:stop])


def check_task_shape(classes: int, ways: int, shots: int, query: int, split: str = "split") -> None:
    """Raise a ConfigError if an N-way K-shot request cannot be met by ``classes`` classes of 20 drawings."""
    if ways < 1 or shots < 0 or query < 0:
        raise ConfigError(f"ways={ways}, shots={shots}, query={query}: ways must be >= 1, shots and query >= 0.")
    if ways > classes:
        raise ConfigError(f"ways={ways} is more than the {classes} classes of the {split}; use at most {classes}.")
    if shots + query > DRAWINGS:
        raise ConfigError(
            f"shots + query = {shots} + {query} = {shots + query} is more than the {DRAWINGS} drawings of "
            f"each Omniglot character; use shots + query <= {DRAWINGS}."
        )


def within_alphabet_classes(classes: ClassSet, ways: int, split: str) -> tuple[Tensor, Tensor]:
    """Each class's alphabet, and the alphabets with at least ``ways`` classes, for within-alphabet episodes.

    Raises:
        ConfigError: the split has no alphabet of ``ways`` classes, or its classes carry no alphabets.
    """
    if classes.alphabets is None:
        raise ConfigError(f"task.within_alphabet: the {split}'s classes carry no alphabets; use within_alphabet: false.")
    alphabets, sizes = np.unique(classes.alphabets, return_counts=True)
    if sizes.max(initial=0) < ways:
        raise ConfigError(
            f"task.ways={ways} with task.within_alphabet: true, but the largest alphabet of the {split} has "
            f"{sizes.max(initial=0)} classes; use at most {sizes.max(initial=0)} ways, or within_alphabet: false."
        )
    return (torch.as_tensor(classes.alphabets, dtype=torch.long),
            torch.as_tensor(alphabets[sizes >= ways], dtype=torch.long))


class EpisodeSampler:
    """Samples N-way K-shot episodes from one split's classes.

    Args:
        images: ``(characters, 20, H, W)`` uint8 ink for all characters (any device; episodes live there).
        classes: the split's classes.
        ways, shots, query: the task shape (``query`` examples per class).
        split: the split's name, for messages.
        within_alphabet: draw each episode's classes from one alphabet (chosen uniformly among the split's
            alphabets with at least ``ways`` classes); where classes turn at random, all the classes of a drawn
            (training) episode turn alike (a turned alphabet is another script, and the episode stays within one).

    Raises:
        ConfigError: the split cannot hold such episodes (named, with what it can hold).
    """

    def __init__(
        self, images: Tensor, classes: ClassSet, ways: int, shots: int, query: int, split: str = "split", *,
        within_alphabet: bool = False,
    ) -> None:
        check_task_shape(len(classes), ways, shots, query, split)
        self.ways, self.shots, self.query = ways, shots, query
        self.classes = classes
        self.split = split
        self.within_alphabet = within_alphabet
        if within_alphabet:
            self._class_alphabet, self._alphabets = within_alphabet_classes(classes, ways, split)
        self._characters = torch.as_tensor(classes.characters, dtype=torch.long)
        self._fixed_rotations = torch.as_tensor(classes.rotations, dtype=torch.long)
        needs_rotation = classes.random_rotation or bool(np.any(classes.rotations))
        turns = range(4) if needs_rotation else range(1)
        # (turns, characters, 20, H, W): every rotation precomputed once, so a gather builds a batch.
        self._images = torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in turns])

    @property
    def device(self) -> torch.device:
        return self._images.device

    def sample_index(self, generator: torch.Generator, tasks: int, *, full_sort: bool = False) -> EpisodeIndex:
        """Draw the indices of ``tasks`` episodes (classes without replacement, drawings without replacement).

        A task's classes are those with the ``ways`` smallest of one random key per class. ``full_sort`` finds them
        by sorting every key, as the fixed dev and test sets always have (so they stay the sets of earlier
        versions); otherwise by ``topk``: the same uniform draw, 10-25x less host time for a meta-batch (on a GPU
        the host's share of a step), equal to the sorted draw except where two float32 keys tie.

        Where classes turn at random, a training episode within one alphabet turns all its classes alike (a turned
        alphabet is another script); the fixed sets (``full_sort``) keep one turn per class, as they always have.
        """
        n_classes = len(self.classes)
        keys = torch.rand(tasks, n_classes, generator=generator)
        if self.within_alphabet:  # the chosen alphabet's classes sort first: ways of them are drawn at random
            alphabet = self._alphabets[torch.randint(0, len(self._alphabets), (tasks,), generator=generator)]
            keys += (self._class_alphabet[None, :] != alphabet[:, None]).to(keys.dtype) * 2
        if full_sort:
            classes = keys.argsort(dim=1)[:, : self.ways]
        else:
            classes = keys.topk(self.ways, dim=1, largest=False).indices
        if self.classes.random_rotation and self.within_alphabet and not full_sort:  # one turn, one script
            rotations = torch.randint(0, 4, (tasks, 1), generator=generator).expand(tasks, self.ways).contiguous()
        elif self.classes.random_rotation:
            rotations = torch.randint(0, 4, (tasks, self.ways), generator=generator)
        else:
            rotations = self._fixed_rotations[classes]
        drawings = torch.rand(tasks, self.ways, DRAWINGS, generator=generator).argsort(dim=2)
        return EpisodeIndex(classes, rotations, drawings[:, :, : self.shots + self.query])

    def build(self, index: EpisodeIndex) -> Episode:
        """Gather the images of ``index`` on the sampler's device."""
        device = self.device
        characters = self._characters[index.classes].to(device)
        rotations = index.rotations.to(device)
        drawings = index.drawings.to(device)
        tasks, ways, per_class = drawings.shape
        pixels = self._images[rotations[:, :, None], characters[:, :, None], drawings]  # (T, N, K+Q, H, W)
        pixels = pixels.float().div_(255.0).unsqueeze(3)  # (T, N, K+Q, 1, H, W)
        labels = torch.arange(ways, device=device).view(1, ways, 1).expand(tasks, ways, per_class)
        k = self.shots
        support_x = pixels[:, :, :k].reshape(tasks, ways * k, *pixels.shape[3:])
        query_x = pixels[:, :, k:].reshape(tasks, ways * (per_class - k), *pixels.shape[3:])
        support_y = labels[:, :, :k].reshape(tasks, -1)
        query_y = labels[:, :, k:].reshape(tasks, -1)
        label_space = 4 if self.classes.random_rotation else 1
        class_ids = (index.classes * label_space + (index.rotations if label_space == 4 else 0)).to(device)
        return Episode(support_x, support_y, query_x, query_y, class_ids)

    def sample(self, generator: torch.Generator, tasks: int) -> Episode:
        """Draw and build a meta-batch of ``tasks`` episodes."""
        return self.build(self.sample_index(generator, tasks))

    def fixed(self, episodes: int, seed: int) -> FixedEpisodes:
        """The fixed episode set for this split, task shape and ``seed``: identical for every learner."""
        keys = episodes * len(self.classes)  # drawn at once, then sorted: about 16 bytes each
        if keys > MAX_FIXED_KEYS:
            raise ConfigError(f"{episodes:,} fixed episodes of the {self.split} ({len(self.classes):,} classes) would "
                              f"take {16 * keys / 2**30:.0f} GiB to draw; use at most "
                              f"{MAX_FIXED_KEYS // len(self.classes):,} episodes.")
        within = "|within-alphabet" if self.within_alphabet else ""  # the sets of earlier studies stay as they were
        key = f"{self.split}|{self.ways}|{self.shots}|{self.query}|{seed}{within}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        return FixedEpisodes(self, self.sample_index(generator, episodes, full_sort=True))


MAX_FIXED_KEYS = 2**27  # episodes x classes of one fixed set: 2 GiB of keys and their order at most


class TaskIndex(Protocol):
    """What identifies a meta-batch of tasks of some family (:class:`EpisodeIndex` for Omniglot)."""

    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> Self: ...


class EpisodeBuilder(Protocol):
    """A family's sampler, as a fixed set uses it: builds the episodes of an index on its device."""

    def build(self, index: Any) -> Episode: ...


@dataclass(frozen=True)
class FixedEpisodes:
    """A fixed, reproducible set of episodes, built on the device in batches when iterated."""

    sampler: EpisodeBuilder
    index: TaskIndex

    def __len__(self) -> int:
        return len(self.index)

    def batches(self, size: int) -> Iterator[Episode]:
        for start in range(0, len(self.index), size):
            yield self.sampler.build(self.index.slice(start, start + size))
