"""Iterators: the seed README's "Iterators" section, batch first."""

import time

import numpy as np
import pytest

from tinyevo import backend as B
from tinyevo.evolution import (
    BatchIterator,
    GpuIterator,
    MapIterator,
    RepeatPartitionIterator,
    ShuffleIterator,
    StatefulGenerationIter,
    TimedIterator,
    TimedIteratorStop,
    ZipIterator,
    itergeneration,
    onehot,
)


def _eq(a, b):
    return np.array_equal(B.to_numpy(a), B.to_numpy(b))


def test_seed_iterator_examples():
    data = np.arange(4 * 5).reshape(5, 4)  # 5 samples of 4 features, batch first

    biter = BatchIterator(data, 2)
    assert next(iter(biter)).shape == (2, 4)

    siter = ShuffleIterator(data, 2, np.random.default_rng(123))
    assert next(iter(siter)).shape == next(iter(biter)).shape
    assert not _eq(next(iter(siter)), next(iter(biter)))

    miter = MapIterator(lambda x: 2 * x, biter)
    assert _eq(next(iter(miter)), 2 * next(iter(biter)))

    giter = GpuIterator(miter)
    assert _eq(next(iter(giter)), B.to_device(next(iter(miter))))

    labels = np.arange(6)
    biter_labels = onehot(BatchIterator(labels, 2), 6)
    assert _eq(next(iter(biter_labels)), onehot(np.array([0, 1]), 6))

    rpiter = RepeatPartitionIterator(ZipIterator(biter, biter_labels), 2)
    piter = next(iter(rpiter))
    assert len(piter) == 2
    expiter = ZipIterator(biter, biter_labels)
    for _model in range(3):
        for (feature, label), (expf, expl) in zip(piter, expiter):
            assert _eq(feature, expf) and _eq(label, expl)

    sgiter = StatefulGenerationIter(rpiter)
    for generationnr, topiter in enumerate(rpiter, start=1):
        gendata = list(itergeneration(sgiter, generationnr))
        expdata = list(topiter)
        assert len(gendata) == len(expdata)
        for (gf, gl), (ef, el) in zip(gendata, expdata):
            assert _eq(gf, ef) and _eq(gl, el)


def test_seed_timed_iterator_example():
    timediter = TimedIterator(timelimit=0.05, patience=4,
                              timeoutaction=lambda: TimedIteratorStop,
                              accumulate_timeouts=False, base=range(1, 101))
    last = 0
    for i in timediter:
        last = i
        if i > 2:
            time.sleep(0.08)
    assert last == 6  # slow after 2, then 4 patience


def test_timed_iterator_accumulates_and_continues_after_action():
    actions = []
    timed = TimedIterator(0.05, 2, base=range(8), timeoutaction=lambda: actions.append(1),
                          accumulate_timeouts=True)
    out = []
    for i in timed:
        out.append(i)
        if i in (1, 4):  # two separated slow items: only counted when accumulating
            time.sleep(0.08)
    assert out == list(range(8)) and actions == [1]


def test_batch_iterator_tuples_shuffle_together_and_reiterate():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10)
    it = BatchIterator((x, y), 4, shuffle=True, rng=np.random.default_rng(0))
    assert len(it) == 3
    first = [(bx.copy(), by.copy()) for bx, by in it]
    second = list(it)
    assert [b[1].shape[0] for b in first] == [4, 4, 2]
    for bx, by in first + second:
        np.testing.assert_array_equal(bx[:, 0], by)  # same permutation for features and labels
    assert sorted(np.concatenate([b[1] for b in first]).tolist()) == list(range(10))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))  # new pass
    assert len(BatchIterator(y, 4, drop_last=True)) == 2
    assert [b.tolist() for b in BatchIterator(y, 4, drop_last=True)][-1] == [4, 5, 6, 7]


def test_batch_iterator_validates():
    with pytest.raises(ValueError, match="first"):
        BatchIterator((np.zeros(3), np.zeros(4)), 2)
    with pytest.raises(ValueError):
        BatchIterator(np.zeros(3), 0)
    with pytest.raises(TypeError):
        BatchIterator([1, 2, 3], 2)


def test_repeat_partition_cycle_and_generation_iter_wraps_around():
    rp = RepeatPartitionIterator(range(5), 2, cycle=True)
    it = iter(rp)
    assert [next(it) for _ in range(4)] == [[0, 1], [2, 3], [4, 0], [1, 2]]
    sg = StatefulGenerationIter(RepeatPartitionIterator(range(3), 2))
    assert [sg.itergeneration(g) for g in (1, 2, 3)] == [[0, 1], [2], [0, 1]]
    assert list(sg) == [0, 1]
    assert itergeneration([1, 2], 5) == [1, 2]


def test_onehot_classes():
    np.testing.assert_array_equal(onehot(np.array(["b", "a"]), ["a", "b", "c"]),
                                  [[0, 1, 0], [1, 0, 0]])
    assert onehot(np.array([1, 0]), 2).dtype == np.float32
    with pytest.raises(ValueError):
        onehot(np.array([3]), 2)
    with pytest.raises(ValueError):
        onehot(np.array(["z"]), ["a"])


@pytest.mark.parametrize("xp", ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)],
                         indirect=True)
def test_gpu_iterator_moves_batches_to_the_backend(xp):
    x = np.ones((4, 2), np.float32)
    y = np.arange(4)
    for bx, by in GpuIterator(BatchIterator((x, y), 2)):
        assert B.get_array_module(bx) is xp and B.get_array_module(by) is xp
        assert bx.dtype == np.float32
