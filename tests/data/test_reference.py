"""The reference-image rule against a brute-force per-image Python implementation."""
import numpy as np
import pytest

from simformer.data.reference import ReferenceSampler, pair_statistics


def brute_force(presence, novel_mask):
    """Level and candidate count of every image, straight from docs/method.md section 4."""
    n = len(presence)
    levels, counts = [], []
    for i in range(n):
        novel_i = {c for c in np.flatnonzero(presence[i]) if novel_mask[c]}
        base_i = {c for c in np.flatnonzero(presence[i]) if not novel_mask[c]}
        others = [j for j in range(n) if j != i]
        novel_of = {j: {c for c in np.flatnonzero(presence[j]) if novel_mask[c]} for j in others}
        base_of = {j: {c for c in np.flatnonzero(presence[j]) if not novel_mask[c]} for j in others}
        deconf = sum(1 for c in novel_i for j in others if novel_of[j] & novel_i == {c})
        if len(novel_i) >= 2 and deconf:
            levels.append(0)
            counts.append(deconf)
            continue
        shared_novel = [j for j in others if novel_of[j] & novel_i]
        if shared_novel:
            levels.append(1)
            counts.append(len(shared_novel))
            continue
        shared_base = [j for j in others if base_of[j] & base_i]
        if shared_base:
            levels.append(2)
            counts.append(len(shared_base))
            continue
        levels.append(3)
        counts.append(1)
    return np.array(levels), np.array(counts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    presence = rng.random((60, 9)) < 0.25
    presence[5] = False  # an image with no class at all -> self
    novel_mask = np.zeros(9, bool)
    novel_mask[[1, 4, 7]] = True
    stats = pair_statistics(presence, novel_mask, chunk=7)  # chunking must not matter
    levels, counts = brute_force(presence, novel_mask)
    np.testing.assert_array_equal(stats.level, levels)
    np.testing.assert_array_equal(stats.candidates, counts)
    assert stats.level[5] == 3


def test_sampled_references_obey_the_rule():
    rng = np.random.default_rng(3)
    presence = rng.random((80, 8)) < 0.3
    novel_mask = np.array([0, 1, 0, 1, 0, 1, 0, 0], bool)
    sampler = ReferenceSampler(presence=presence, novel_mask=novel_mask, mode="cross")
    levels, _ = brute_force(presence, novel_mask)
    draw = np.random.default_rng(0)
    seen_levels = set()
    for i in range(len(presence)):
        for _ in range(5):
            j = sampler.sample(i, draw)
            ni, nj = presence[i] & novel_mask, presence[j] & novel_mask
            bi, bj = presence[i] & ~novel_mask, presence[j] & ~novel_mask
            if levels[i] == 0:
                assert j != i and (ni & nj).sum() == 1
            elif levels[i] == 1:
                assert j != i and (ni & nj).any()
            elif levels[i] == 2:
                assert j != i and (bi & bj).any() and not (ni & nj).any()
            else:
                assert j == i
            seen_levels.add(int(levels[i]))
    assert {0, 1}.issubset(seen_levels)


def test_deconfounded_choice_covers_each_novel_class():
    # image 0 has novel classes 1 and 2; image 1 shares only 1, image 2 only 2, image 3 shares both.
    presence = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1], [0, 1, 1]], bool)
    novel_mask = np.array([False, True, True])
    sampler = ReferenceSampler(presence=presence, novel_mask=novel_mask)
    draws = {sampler.sample(0, np.random.default_rng(s)) for s in range(50)}
    assert draws == {1, 2}  # never 3 (confounded), never itself


def test_self_mode_and_determinism():
    presence = np.eye(4, dtype=bool)
    sampler = ReferenceSampler(presence=presence, novel_mask=np.zeros(4, bool), mode="self")
    assert [sampler.sample(i, np.random.default_rng(0)) for i in range(4)] == [0, 1, 2, 3]
    rng_presence = np.random.default_rng(1).random((30, 5)) < 0.4
    s = ReferenceSampler(presence=rng_presence, novel_mask=np.array([1, 0, 0, 1, 0], bool))
    a = [s.sample(i, np.random.default_rng([7, i])) for i in range(30)]
    b = [s.sample(i, np.random.default_rng([7, i])) for i in range(30)]
    assert a == b
