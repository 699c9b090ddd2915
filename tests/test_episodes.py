"""Episode sampling on synthetic images whose pixels encode (character, drawing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_meta.data import ClassSet
import nas_meta.episodes as episodes_module
from nas_meta.episodes import EpisodeSampler
from nas_meta.errors import ConfigError

CHARS, SIZE = 30, 6


def coded_images() -> torch.Tensor:
    """images[c, d] has pixel (0, 0) = c, pixel (0, 1) = d and pixel (SIZE-1, SIZE-1) = 200 (marks rotation)."""
    images = torch.zeros(CHARS, 20, SIZE, SIZE, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(CHARS, dtype=torch.uint8)[:, None]
    images[:, :, 0, 1] = torch.arange(20, dtype=torch.uint8)[None, :]
    images[:, :, -1, -1] = 200
    return images


def decode(x: torch.Tensor, rotation: int) -> tuple[int, int]:
    img = torch.rot90((x[0] * 255).round().to(torch.int64), -rotation, dims=(-2, -1))
    assert int(img[-1, -1]) == 200
    return int(img[0, 0]), int(img[0, 1])


def test_shapes_labels_and_contents() -> None:
    classes = ClassSet(np.arange(0, CHARS, 2), np.zeros(CHARS // 2, dtype=np.int64), random_rotation=True)
    sampler = EpisodeSampler(coded_images(), classes, ways=4, shots=2, query=3)
    index = sampler.sample_index(torch.Generator().manual_seed(0), 5)
    ep = sampler.build(index)
    assert ep.support_x.shape == (5, 8, 1, SIZE, SIZE) and ep.query_x.shape == (5, 12, 1, SIZE, SIZE)
    assert ep.support_y.tolist()[0] == [0, 0, 1, 1, 2, 2, 3, 3]
    for t in range(5):
        assert len(set(index.classes[t].tolist())) == 4
        for label in range(4):
            char = int(classes.characters[index.classes[t, label]])
            rot = int(index.rotations[t, label])
            seen = [decode(ep.support_x[t, i], rot) for i in range(8) if ep.support_y[t, i] == label]
            seen += [decode(ep.query_x[t, i], rot) for i in range(12) if ep.query_y[t, i] == label]
            assert {c for c, _ in seen} == {char}  # one character per label, only from the split
            assert len({d for _, d in seen}) == 5  # K + Q distinct drawings
            assert int(ep.class_ids[t, label]) == int(index.classes[t, label]) * 4 + rot


def test_rotations_are_random_per_task_for_maml_and_fixed_otherwise() -> None:
    n = CHARS
    random_rot = EpisodeSampler(coded_images(), ClassSet(np.arange(n), np.zeros(n, dtype=np.int64), True), 5, 1, 1)
    index = random_rot.sample_index(torch.Generator().manual_seed(1), 200)
    assert set(index.rotations.flatten().tolist()) == {0, 1, 2, 3}
    fixed = ClassSet(np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5), False)
    sampler = EpisodeSampler(coded_images(), fixed, 5, 1, 1)
    index = sampler.sample_index(torch.Generator().manual_seed(1), 50)
    assert torch.equal(index.rotations, torch.as_tensor(fixed.rotations)[index.classes])


def test_labels_are_a_fresh_permutation_per_task() -> None:
    sampler = EpisodeSampler(coded_images(), ClassSet(np.arange(5), np.zeros(5, dtype=np.int64), False), 5, 1, 1)
    index = sampler.sample_index(torch.Generator().manual_seed(0), 100)
    orders = {tuple(index.classes[t].tolist()) for t in range(100)}
    assert len(orders) > 50  # the same 5 classes get different labels in different tasks


def test_a_fixed_set_too_large_to_draw_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--episodes 1000000`` on a split of 1,692 classes: 27 GB of keys and their order, once an out-of-memory
    error or a killed process; now a message with the largest count that fits."""
    assert episodes_module.MAX_FIXED_KEYS // 1692 >= 10_000  # the real cap leaves room for any real test set
    monkeypatch.setattr(episodes_module, "MAX_FIXED_KEYS", CHARS * 100)  # the same rule, at this test's scale
    sampler = EpisodeSampler(coded_images(), ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), True), 5, 1, 2,
                             split="test split")
    assert len(sampler.fixed(100, seed=0)) == 100
    with pytest.raises(ConfigError) as info:
        sampler.fixed(101, seed=0)
    assert str(info.value) == ("101 fixed episodes of the test split (30 classes) would take 0 GiB to draw; use at "
                               "most 100 episodes.")


def test_fixed_sets_are_deterministic_and_seeded() -> None:
    sampler = EpisodeSampler(coded_images(), ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), True), 5, 1, 2)
    a, b, c = sampler.fixed(40, seed=0), sampler.fixed(40, seed=0), sampler.fixed(40, seed=1)
    assert torch.equal(a.index.classes, b.index.classes) and torch.equal(a.index.drawings, b.index.drawings)
    assert not torch.equal(a.index.classes, c.index.classes)
    batches = list(a.batches(15))
    assert [e.tasks for e in batches] == [15, 15, 10]
    whole = sampler.build(a.index)
    assert torch.equal(torch.cat([e.query_x for e in batches]), whole.query_x)


def test_sampling_is_reproducible_from_the_generator_seed() -> None:
    sampler = EpisodeSampler(coded_images(), ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), True), 5, 1, 2)
    e1 = sampler.sample(torch.Generator().manual_seed(7), 4)
    e2 = sampler.sample(torch.Generator().manual_seed(7), 4)
    assert torch.equal(e1.support_x, e2.support_x) and torch.equal(e1.query_y, e2.query_y)


@pytest.mark.parametrize(
    ("ways", "shots", "query", "message"),
    [
        (31, 1, 1, "ways=31 is more than the 30 classes of the train split; use at most 30."),
        (5, 5, 16, ("shots + query = 5 + 16 = 21 is more than the 20 drawings of each Omniglot character; "
                   "use shots + query <= 20.")),
    ],
)
def test_impossible_requests_fail_clearly(ways: int, shots: int, query: int, message: str) -> None:
    classes = ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), True)
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(coded_images(), classes, ways, shots, query, split="train split")
    assert str(info.value) == message


# -- within one alphabet (Lake et al.'s one-shot task) -------------------------------------------------------------

ALPHABET_SIZES = (4, 7, 12, 3, 4)  # 30 characters in five alphabets; with ways=4 the 3-letter one is never drawn


def alphabet_classes(random_rotation: bool = False) -> ClassSet:
    alphabets = np.repeat(np.arange(len(ALPHABET_SIZES)), ALPHABET_SIZES)
    return ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), random_rotation, alphabets)


@pytest.mark.parametrize("random_rotation", [False, True])
def test_within_alphabet_episodes_draw_every_class_of_a_task_from_one_alphabet(random_rotation: bool) -> None:
    classes = alphabet_classes(random_rotation)
    sampler = EpisodeSampler(coded_images(), classes, 4, 1, 2, within_alphabet=True)
    index = sampler.sample_index(torch.Generator().manual_seed(0), 2000)
    per_task = classes.alphabets[index.classes.numpy()]  # (tasks, ways) alphabet of each drawn class
    assert (per_task == per_task[:, :1]).all()
    assert all(len(set(t)) == 4 for t in index.classes.tolist())  # distinct classes
    drawn, counts = np.unique(per_task[:, 0], return_counts=True)
    assert drawn.tolist() == [0, 1, 2, 4]  # the 3-character alphabet cannot hold 4 ways
    assert counts.min() > 2000 / 4 * 0.85 and counts.max() < 2000 / 4 * 1.15  # alphabets chosen uniformly
    in_12 = index.classes[torch.as_tensor(per_task[:, 0] == 2)]
    assert set(in_12.flatten().tolist()) == set(range(11, 23))  # every class of the 12-letter alphabet gets drawn
    episode = sampler.build(index)
    for t in range(3):  # the images are those classes' characters
        for i, label in enumerate(episode.support_y[t].tolist()):
            char = int(classes.characters[index.classes[t, label]])
            assert decode(episode.support_x[t, i], int(index.rotations[t, label]))[0] == char


@pytest.mark.parametrize("within_alphabet", [False, True])
def test_random_turns_are_one_per_episode_within_an_alphabet_and_one_per_class_otherwise(
        within_alphabet: bool) -> None:
    sampler = EpisodeSampler(coded_images(), alphabet_classes(random_rotation=True), 4, 1, 2,
                             within_alphabet=within_alphabet)
    rotations = sampler.sample_index(torch.Generator().manual_seed(0), 2000).rotations
    alike = (rotations == rotations[:, :1]).all(dim=1)
    assert bool(alike.all()) is within_alphabet  # independent turns: all four alike in 1/64 of the tasks
    assert within_alphabet or alike.float().mean() < 0.05
    counts = torch.bincount(rotations[:, 0], minlength=4)
    assert counts.min() > 2000 / 4 * 0.85 and counts.max() < 2000 / 4 * 1.15  # each turn equally likely
    fixed = sampler.fixed(2000, seed=0).index.rotations  # the fixed sets keep one turn per class, as they always had
    assert (fixed == fixed[:, :1]).all(dim=1).float().mean() < 0.05


def test_plain_episodes_still_mix_alphabets_and_keep_their_fixed_sets() -> None:
    classes = alphabet_classes()
    plain = EpisodeSampler(coded_images(), classes, 4, 1, 2)
    within = EpisodeSampler(coded_images(), classes, 4, 1, 2, within_alphabet=True)
    index = plain.sample_index(torch.Generator().manual_seed(0), 200)
    assert (classes.alphabets[index.classes.numpy()] != classes.alphabets[index.classes.numpy()][:, :1]).any()
    # the fixed sets of studies made before within_alphabet existed are unchanged: keyed as they were
    import hashlib

    key = b"split|4|1|2|7"
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    assert torch.equal(plain.fixed(30, seed=7).index.classes, plain.sample_index(generator, 30, full_sort=True).classes)
    assert not torch.equal(within.fixed(30, seed=7).index.classes, plain.fixed(30, seed=7).index.classes)
    again = EpisodeSampler(coded_images(), classes, 4, 1, 2, within_alphabet=True).fixed(30, seed=7)
    assert torch.equal(within.fixed(30, seed=7).index.classes, again.index.classes)


def test_within_alphabet_names_the_largest_alphabet_when_ways_cannot_fit() -> None:
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(coded_images(), alphabet_classes(), 13, 1, 1, "dev split", within_alphabet=True)
    assert str(info.value) == ("task.ways=13 with task.within_alphabet: true, but the largest alphabet of the dev split "
                               "has 12 classes; use at most 12 ways, or within_alphabet: false.")
    EpisodeSampler(coded_images(), alphabet_classes(), 12, 1, 1, within_alphabet=True)  # exactly fits
    bare = ClassSet(np.arange(CHARS), np.zeros(CHARS, dtype=np.int64), False)
    with pytest.raises(ConfigError, match="carry no alphabets"):
        EpisodeSampler(coded_images(), bare, 4, 1, 1, within_alphabet=True)


@pytest.mark.parametrize("within_alphabet", [False, True])
def test_training_draws_pick_the_classes_the_full_sort_picks(within_alphabet: bool) -> None:
    # topk and a full sort of the same keys agree wherever no two keys tie (never, in practice, among 30 classes)
    sampler = EpisodeSampler(coded_images(), alphabet_classes(), 4, 1, 2, within_alphabet=within_alphabet)
    fast = sampler.sample_index(torch.Generator().manual_seed(3), 500)
    exact = sampler.sample_index(torch.Generator().manual_seed(3), 500, full_sort=True)
    assert torch.equal(fast.classes, exact.classes) and torch.equal(fast.drawings, exact.drawings)
    assert len(set(fast.classes.flatten().tolist())) == 30 - (3 if within_alphabet else 0)  # every class reachable
