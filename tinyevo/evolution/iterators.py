"""Data iterators: mini-batching, shuffling, mapping, device transfer and the GA's partitioning.

Data is an array or a tuple of arrays with the same first (batch) dimension, e.g. ``(x, y)``;
batches come out in the same form. Every iterator here is re-iterable: each ``iter()`` is a new
pass. :class:`RepeatPartitionIterator` is the one special to the GA: it hands out the data in
partitions of ``n`` batches, and every candidate of a generation sees the same partition.
:class:`ReBatchingIterator` and :class:`SeedIterator` change how a candidate sees them: in
batches of its own size (an *iterator map* such as :class:`BatchSizeIteratorMap`, carried by a
``CandidateDataIterMap``), and with the same random draws on every pass.

    >>> it = BatchIterator((np.zeros((5, 2)), np.arange(5)), batchsize=2)
    >>> [y.tolist() for _, y in it]
    [[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tinyevo import backend as B

__all__ = [
    "BatchIterator", "ShuffleIterator", "MapIterator", "ZipIterator", "GpuIterator",
    "RepeatPartitionIterator", "StatefulGenerationIter", "TimedIterator", "TimedIteratorStop",
    "itergeneration", "onehot",
]
__all__ += ["ReBatchingIterator", "SeedIterator", "AbstractIteratorMap", "BatchSizeIteratorMap"]


class BatchIterator:
    """BatchIterator(data, batchsize, shuffle=False, rng=None, drop_last=False).

    Slices ``data`` (an array or a tuple of arrays, batch first) into batches. With ``shuffle``
    every pass draws a new permutation from ``rng`` (else the library generator) and applies the
    same one to every array of the tuple, so features and labels stay paired.

        >>> len(BatchIterator(np.arange(10), 4))
        3
    """

    def __init__(self, data: Any, batchsize: int, shuffle: bool = False,
                 rng: np.random.Generator | None = None, drop_last: bool = False) -> None:
        self._arrays, self._is_tuple = _as_arrays(data)
        if not isinstance(batchsize, (int, np.integer)) or batchsize < 1:
            raise ValueError(f"batchsize must be a positive integer, got {batchsize!r}")
        self.batchsize = int(batchsize)
        self.shuffle = bool(shuffle)
        self.rng = rng
        self.drop_last = bool(drop_last)
        self.n = self._arrays[0].shape[0]

    @property
    def data(self) -> Any:
        return tuple(self._arrays) if self._is_tuple else self._arrays[0]

    def __len__(self) -> int:
        return self.n // self.batchsize if self.drop_last else math.ceil(self.n / self.batchsize)

    @property
    def nsamples(self) -> int:
        """Samples in a pass (what a :class:`ReBatchingIterator` over it needs for its length)."""
        return self.n - self.n % self.batchsize if self.drop_last else self.n

    def __iter__(self) -> Iterator[Any]:
        n, bs = self.n, self.batchsize
        perm = B.rng(self.rng).permutation(n) if self.shuffle else None
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            if perm is None:
                parts = [a[start:start + bs] for a in self._arrays]
            else:
                idx = perm[start:start + bs]
                parts = [a[B.get_array_module(a).asarray(idx)] for a in self._arrays]
            yield tuple(parts) if self._is_tuple else parts[0]

    def __repr__(self) -> str:
        return (f"BatchIterator(n={self.n}, batchsize={self.batchsize}, "
                f"shuffle={self.shuffle})")


def ShuffleIterator(data: Any, batchsize: int,  # noqa: N802 - the seed's name
                    rng: np.random.Generator | None = None) -> BatchIterator:
    """A :class:`BatchIterator` that reshuffles on every pass (the seed's ShuffleIterator)."""
    return BatchIterator(data, batchsize, shuffle=True, rng=rng)


class MapIterator:
    """MapIterator(f, it): ``f`` applied to each batch of ``it``, lazily, on every pass.

        >>> list(MapIterator(lambda b: 2 * b, [1, 2]))
        [2, 4]
    """

    def __init__(self, f: Callable[[Any], Any], it: Iterable) -> None:
        self.f, self.base = f, it

    def __iter__(self) -> Iterator[Any]:
        return map(self.f, self.base)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"MapIterator({getattr(self.f, '__name__', self.f)!r}, {self.base!r})"


class ZipIterator:
    """ZipIterator(*its): a re-iterable ``zip`` (Python's ``zip`` is single pass)."""

    def __init__(self, *its: Iterable) -> None:
        self.bases = its

    def __iter__(self) -> Iterator[tuple]:
        return zip(*self.bases)

    def __len__(self) -> int:
        return min(len(b) for b in self.bases)  # type: ignore[arg-type]


class GpuIterator(MapIterator):
    """GpuIterator(it): each batch (array or tuple of arrays) moved to the current backend's
    device as it is drawn; a pass-through on NumPy. Put it under a RepeatPartitionIterator so each
    batch crosses to the device once per generation, not once per candidate."""

    def __init__(self, it: Iterable) -> None:
        super().__init__(_to_device, it)

    def __repr__(self) -> str:
        return f"GpuIterator({self.base!r})"


class RepeatPartitionIterator:
    """RepeatPartitionIterator(it, n, cycle=False): partitions of ``n`` consecutive batches.

    Each partition is a re-iterable list, so every candidate trained on it sees exactly the same
    batches in the same order. Each pass over this iterator is a fresh pass over ``it``; with
    ``cycle=True`` it restarts ``it`` when exhausted and never ends (for long runs).

        >>> [list(p) for p in RepeatPartitionIterator(range(5), 2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, it: Iterable, n: int, cycle: bool = False) -> None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"RepeatPartitionIterator: n must be a positive integer, got {n!r}")
        self.base, self.n, self.cycle = it, int(n), bool(cycle)

    def __iter__(self) -> Iterator[list]:
        source = _cycled(self.base) if self.cycle else iter(self.base)
        while True:
            part = list(itertools.islice(source, self.n))
            if not part:
                return
            yield part

    def __len__(self) -> int:
        if self.cycle:
            raise TypeError("a cycling RepeatPartitionIterator has no length")
        return math.ceil(len(self.base) / self.n)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"RepeatPartitionIterator({self.base!r}, {self.n}, cycle={self.cycle})"


class StatefulGenerationIter:
    """Maps a generation number to the data of that generation.

    ``itergeneration(gen)`` returns the current partition while ``gen`` is unchanged and advances
    to the next partition of ``it`` when ``gen`` changes (restarting ``it`` when it runs out).
    TrainThenFitness calls it with the population's generation, so all candidates of a
    generation train on the same batches.

        >>> s = StatefulGenerationIter(RepeatPartitionIterator(range(4), 2))
        >>> s.itergeneration(1), s.itergeneration(1), s.itergeneration(2)
        ([0, 1], [0, 1], [2, 3])
    """

    def __init__(self, it: Iterable) -> None:
        self.base = it
        self._source: Iterator | None = None
        self._gen: Any = object()
        self._current: Any = None

    def itergeneration(self, generation: Any) -> Any:
        if self._current is None or generation != self._gen:
            self._current = self._next()
            self._gen = generation
        return self._current

    def _next(self) -> Any:
        for _ in range(2):
            if self._source is None:
                self._source = iter(self.base)
            try:
                return next(self._source)
            except StopIteration:
                self._source = None
        raise ValueError("StatefulGenerationIter: the wrapped iterator yields nothing")

    def __iter__(self) -> Iterator[Any]:
        """Iterating gives the current generation's data (the first partition if none yet)."""
        current = self._current if self._current is not None else self.itergeneration(None)
        return iter(current)

    def __repr__(self) -> str:
        return f"StatefulGenerationIter({self.base!r})"


def itergeneration(it: Any, generation: Any) -> Any:
    """``it.itergeneration(generation)`` where ``it`` is generation aware, else ``it``."""
    fn = getattr(it, "itergeneration", None)
    return fn(generation) if callable(fn) else it


class _Stop:
    def __repr__(self) -> str:
        return "TimedIteratorStop"


TimedIteratorStop = _Stop()
"""Return this from a TimedIterator's ``timeoutaction`` to end the iteration."""


class TimedIterator:
    """Stops (or acts) when the consumer spends too long on the batches.

    The time between handing out an element and being asked for the next one is the time the
    consumer spent on it. Each time over ``timelimit`` seconds is a timeout; a fast element resets
    the count unless ``accumulate_timeouts``. After ``patience`` timeouts ``timeoutaction()`` is
    called: returning :data:`TimedIteratorStop` ends the iteration, anything else resets the
    count and goes on.

        >>> it = TimedIterator(timelimit=1.0, patience=2, base=range(3)); list(it)
        [0, 1, 2]
    """

    def __init__(self, timelimit: float, patience: int, base: Iterable,
                 timeoutaction: Callable[[], Any] = lambda: TimedIteratorStop,
                 accumulate_timeouts: bool = False) -> None:
        if timelimit <= 0 or patience < 1:
            raise ValueError(f"TimedIterator: timelimit must be > 0 and patience >= 1, got "
                             f"timelimit={timelimit}, patience={patience}")
        self.timelimit, self.patience = float(timelimit), int(patience)
        self.timeoutaction, self.accumulate_timeouts = timeoutaction, bool(accumulate_timeouts)
        self.base = base

    def __iter__(self) -> Iterator[Any]:
        ntimeouts, handed_out = 0, None
        for item in self.base:
            if handed_out is not None:
                if time.perf_counter() - handed_out > self.timelimit:
                    ntimeouts += 1
                elif not self.accumulate_timeouts:
                    ntimeouts = 0
                if ntimeouts >= self.patience:
                    if self.timeoutaction() is TimedIteratorStop:
                        return
                    ntimeouts = 0
            handed_out = time.perf_counter()
            yield item

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"TimedIterator(timelimit={self.timelimit}, patience={self.patience}, "
                f"base={self.base!r})")


class ReBatchingIterator:
    """ReBatchingIterator(it, batch_size): the batches of ``it`` joined and split into batches of
    ``batch_size`` samples (the seed's ReBatchingIterator).

    Each batch of ``it`` is an array or a tuple of arrays, batch first; the samples come out in
    the order they went in, the last batch smaller where they do not divide evenly. A batch
    that needs no joining is a slice of the one it came from (no copy).

        >>> it = ReBatchingIterator(BatchIterator(np.arange(10), 4), 3)
        >>> [b.tolist() for b in it]
        [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]

    ``len()`` needs the number of samples of a pass: ``it.nsamples`` where ``it`` has it
    (:class:`BatchIterator`, the batches of a ``fit`` generation), else counted on a pass.
    """

    def __init__(self, it: Iterable, batch_size: int) -> None:
        if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                or batch_size < 1):
            raise ValueError(f"ReBatchingIterator: batch_size must be a positive integer, got "
                             f"{batch_size!r}")
        self.base, self.batch_size = it, int(batch_size)

    def __iter__(self) -> Iterator[Any]:
        pending: list[list] = []     # slices waiting to fill a batch, each a list of arrays
        npending, is_tuple = 0, False
        for batch in self.base:
            arrays, is_tuple = _as_arrays(batch)
            n, start = arrays[0].shape[0], 0
            while start < n:
                take = min(self.batch_size - npending, n - start)
                pending.append([a[start:start + take] for a in arrays])
                npending, start = npending + take, start + take
                if npending == self.batch_size:
                    yield _joined(pending, is_tuple)
                    pending, npending = [], 0
        if pending:
            yield _joined(pending, is_tuple)

    @property
    def nsamples(self) -> int:
        """Samples in a pass: those of the iterator it re-batches."""
        return _nsamples(self.base)

    def __len__(self) -> int:
        return math.ceil(self.nsamples / self.batch_size)

    def __repr__(self) -> str:
        return f"ReBatchingIterator({self.base!r}, {self.batch_size})"


class SeedIterator:
    """SeedIterator(it, rng=None, seed=None): ``it`` with a generator re-seeded before each
    element, so that every pass draws the same random numbers (the seed's SeedIterator).

    Element ``i`` of a pass is drawn after ``rng`` (else the library generator,
    :func:`tinyevo.seed`) is re-seeded with ``seed + i``; ``seed`` defaults to a draw from that
    generator when the iterator is made. Shuffling or augmentation that draws from the
    generator then gives the same batches on every pass, so every candidate of a generation
    trains on the same data. After a whole pass the generator is left re-seeded with ``seed +
    n`` (n elements): with the library generator, whatever draws next (selection, mutation)
    draws the same numbers after every pass, so prefer a generator of its own (``rng``) for
    data in a search.

        >>> shuffled = SeedIterator(BatchIterator(np.arange(6), 2, shuffle=True))
        >>> [b.tolist() for b in shuffled] == [b.tolist() for b in shuffled]
        True
    """

    def __init__(self, it: Iterable, rng: np.random.Generator | None = None,
                 seed: int | None = None) -> None:
        if seed is None:
            seed = int(B.rng(rng).integers(2**32))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"SeedIterator: seed must be None or an integer >= 0, got {seed!r}")
        self.base, self.rng, self.seed = it, rng, int(seed)

    def __iter__(self) -> Iterator[Any]:
        source = None
        for i in itertools.count():
            _reseed(B.rng(self.rng), self.seed + i)
            if source is None:
                source = iter(self.base)     # a pass may draw as it starts: seeded too
            try:
                item = next(source)
            except StopIteration:
                return
            yield item

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SeedIterator({self.base!r}, seed={self.seed})"


class AbstractIteratorMap:
    """An iterator map: ``m(it)`` is the training iterator a candidate uses in place of ``it``
    (the seed's ``maptrain``). A ``CandidateDataIterMap`` carries one, ``TrainThenFitness``
    applies it, and mutations and crossovers of iterator maps (``TrainBatchSizeMutation``,
    ``IteratorMapCrossover``) change or swap it. The base class maps ``it`` to itself.

        >>> AbstractIteratorMap()([1, 2])
        [1, 2]
    """

    def __call__(self, it: Iterable) -> Iterable:
        return it


@dataclasses.dataclass(frozen=True)
class BatchSizeIteratorMap(AbstractIteratorMap):
    """BatchSizeIteratorMap(batch_size): train in batches of ``batch_size`` samples, the same
    samples in the same order (a :class:`ReBatchingIterator`; the seed's BatchSizeIteratorMap,
    for training only: validation keeps the fitness's batches).

        >>> [len(b) for b in BatchSizeIteratorMap(4)(BatchIterator(np.arange(10), 5))]
        [4, 4, 2]
    """

    batch_size: int

    def __post_init__(self) -> None:
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"BatchSizeIteratorMap: batch_size must be a positive integer, "
                             f"got {size!r}")
        object.__setattr__(self, "batch_size", int(size))

    def __call__(self, it: Iterable) -> ReBatchingIterator:
        return ReBatchingIterator(it, self.batch_size)


def onehot(labels: Any, classes: Any) -> Any:
    """One-hot encode ``labels`` (N,) as (N, K) floats; an iterable of label batches gives a
    re-iterable of encoded batches. ``classes`` is K (labels 0..K-1) or the sequence of classes.

        >>> onehot(np.array([2, 0]), 3).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if isinstance(labels, (list, tuple, range)):
        labels = np.asarray(labels)
    if not hasattr(labels, "shape"):
        return MapIterator(lambda y: onehot(y, classes), labels)
    xp = B.get_array_module(labels)
    if isinstance(classes, (int, np.integer)):
        index, k = labels.astype(np.int64, copy=False), int(classes)
        if xp is np and index.size and (index.min() < 0 or index.max() >= k):
            raise ValueError(f"onehot: labels must lie in [0, {k}), got range "
                             f"[{index.min()}, {index.max()}]; pass the classes explicitly")
    else:
        position = {c: i for i, c in enumerate(np.asarray(list(classes)).tolist())}
        k = len(position)
        values = B.to_numpy(labels).tolist()
        missing = sorted(set(values) - set(position))
        if missing:
            raise ValueError(f"onehot: labels {missing} are not among the classes "
                             f"{list(position)}")
        index = xp.asarray(np.array([position[v] for v in values], dtype=np.int64))
    out = xp.zeros((index.shape[0], k), dtype=B.floatx())
    out[xp.arange(index.shape[0]), index] = 1.0
    return out


# --------------------------------------------------------------------- helpers
def _as_arrays(data: Any) -> tuple[list, bool]:
    is_tuple = isinstance(data, tuple)
    arrays = list(data) if is_tuple else [data]
    if not arrays:
        raise ValueError("data must be an array or a non-empty tuple of arrays")
    for i, a in enumerate(arrays):
        if not hasattr(a, "shape") or len(a.shape) < 1:
            raise TypeError(f"data[{i}] must be an array with a batch dimension, got "
                            f"{type(a).__name__}; convert lists with numpy.asarray")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"all arrays of the data tuple need the same first (batch) dimension, "
                         f"got {[a.shape[0] for a in arrays]}")
    return arrays, is_tuple


def _to_device(batch: Any) -> Any:
    if isinstance(batch, tuple):
        return tuple(_to_device(b) for b in batch)
    if isinstance(batch, list):
        return [_to_device(b) for b in batch]
    return B.to_device(batch) if hasattr(batch, "shape") else batch


def _cycled(it: Iterable) -> Iterator[Any]:
    while True:
        empty = True
        for item in it:
            empty = False
            yield item
        if empty:
            return


def _joined(parts: list[list], is_tuple: bool) -> Any:
    """One batch from the slices ``parts`` (each a list of arrays), joined per array."""
    if len(parts) == 1:
        arrays = parts[0]
    else:
        arrays = [B.get_array_module(group[0]).concatenate(group) for group in zip(*parts)]
    return tuple(arrays) if is_tuple else arrays[0]


def _nsamples(it: Any) -> int:
    """Samples in a pass over ``it``: ``it.nsamples`` where it has one, else counted."""
    n = getattr(it, "nsamples", None)
    if n is not None:
        return int(n)
    return sum(_as_arrays(batch)[0][0].shape[0] for batch in it)


def _reseed(gen: np.random.Generator, seed: int) -> None:
    """Put ``gen`` (in place, so every holder sees it) in the state a fresh one of ``seed``
    starts from."""
    gen.bit_generator.state = type(gen.bit_generator)(seed).state
