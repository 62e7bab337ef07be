"""Hostile dataset files (issue #22)."""

import pickle

import numpy as np
import pytest

from tinyevo.app import datasets
from tinyevo.app.datasets import load_cifar10


def _batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"tiny batch",
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"filenames": [b"img%d.png" % i for i in range(n)]}


def _write_test_batch(folder, payload):
    """A CIFAR-10 folder whose test_batch holds ``payload``: pickled if not already bytes."""
    raw = payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=4)
    (folder / "test_batch").write_bytes(raw)
    return folder


def _bomb(levels=40):
    # a = [a, a] nested `levels` times: a few hundred bytes pickled, 2**levels lists as a tree
    a = []
    for _ in range(levels):
        a = [a, a]
    return a


class _Reduces:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state``."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def test_shared_reference_bomb_is_small_on_disk():
    assert len(pickle.dumps(_bomb(40), protocol=4)) < 1000


@pytest.mark.parametrize("where, message", [
    ("top", r"expected a CIFAR-10 batch \(a dict with 'data' and 'labels'\), got list"),
    ("labels", r"refused or malformed pickle: containers nested more than 8 deep"),
    ("data", r"'data' must be a uint8 array of shape \(N, 3072\), got list"),
])
def test_shared_reference_bomb_is_refused(tmp_path, where, message):
    # Without bounds, walking this file expands 2**40 lists: MemoryError after many seconds.
    if where == "top":
        payload = _bomb(40)
    else:
        payload = _batch()
        payload[where.encode()] = _bomb(40)
    _write_test_batch(tmp_path, payload)
    with pytest.raises(ValueError, match=r"test_batch: .*" + message):
        load_cifar10(tmp_path, "test")


def test_shared_reference_bomb_in_an_unused_entry_is_never_walked(tmp_path):
    batch = _batch()
    batch[b"filenames"] = _bomb(40)
    x, y = load_cifar10(_write_test_batch(tmp_path, batch), "test")
    assert x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(y, batch[b"labels"])


def test_resolve_walks_each_shared_container_once_and_keeps_it_shared():
    resolved = datasets._resolve(_bomb(6))
    for _ in range(5):
        assert resolved[0] is resolved[1]
        resolved = resolved[0]


def test_deep_nesting_is_refused_without_recursion_error(tmp_path):
    # 100,000 nested lists straight in pickle opcodes (the pickler itself would recurse):
    # EMPTY_LIST n times, then APPEND n - 1 times.
    depth = 100_000
    deep = b"]" * depth + b"a" * (depth - 1)
    _write_test_batch(tmp_path, b"\x80\x04" + deep + b".")
    with pytest.raises(ValueError, match=r"test_batch: expected a CIFAR-10 batch .* got list"):
        load_cifar10(tmp_path, "test")
    data = pickle.dumps(_batch()[b"data"], protocol=3)[2:-1]  # protocol 3: no frames to cut
    raw = b"\x80\x03}(" + b"C\x04data" + data + b"C\x06labels" + deep + b"u."
    _write_test_batch(tmp_path, raw)
    with pytest.raises(ValueError, match=r"test_batch: refused .* nested more than 8 deep.*"
                                         r"not a genuine CIFAR-10 batch"):
        load_cifar10(tmp_path, "test")


def test_container_holding_itself_is_refused(tmp_path):
    loop = [1]
    loop.append(loop)
    batch = _batch()
    batch[b"labels"] = loop
    _write_test_batch(tmp_path, batch)
    with pytest.raises(ValueError, match="a list that contains itself"):
        load_cifar10(tmp_path, "test")


def test_too_many_values_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_MAX_VALUES", 100)
    batch = _batch(n=101)
    _write_test_batch(tmp_path, batch)
    with pytest.raises(ValueError, match="more than 100 values in all"):
        load_cifar10(tmp_path, "test")
    _write_test_batch(tmp_path, _batch(n=100))
    assert load_cifar10(tmp_path, "test")[1].shape == (100,)


@pytest.mark.parametrize("payload, message", [
    ([1, 2, 3], r"expected a CIFAR-10 batch \(a dict with 'data' and 'labels'\), got list"),
    ((b"data", b"labels"), "got tuple"),
    ("data", "got str"),
    ({b"data": [[0] * 3072], b"labels": [0]}, r"'data' must be a uint8 array .* got list"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": b"\x00"},
     "'labels' must be a list of ints, got bytes"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [[0]]},
     "'labels' must be a list of ints, got a list holding list"),
    ({(b"data",): 1, b"labels": 2}, r"needs keys 'data' and 'labels', found .*CIFAR-100"),
])
def test_structures_other_than_a_batch_dict_are_refused(tmp_path, payload, message):
    _write_test_batch(tmp_path, payload)
    with pytest.raises(ValueError, match=r"test_batch: .*" + message):
        load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("make", [
    lambda: _Reduces(np.dtype, (_bomb(40), False, True)),
    lambda: _Reduces(np.ndarray.__reduce__(np.zeros(1, np.uint8))[0],
                     (np.ndarray, (0,), b"b"), (1, _bomb(40), np.dtype("u1"), False, b"")),
])
def test_refusal_messages_do_not_repr_a_bomb(tmp_path, make):
    batch = _batch()
    batch[b"data"] = make()
    _write_test_batch(tmp_path, batch)
    with pytest.raises(ValueError, match=r"test_batch: refused") as caught:
        load_cifar10(tmp_path, "test")
    assert len(str(caught.value)) < 400


def test_huge_array_dimension_gives_a_clear_error(tmp_path):
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]
    batch = _batch()
    batch[b"data"] = _Reduces(reconstruct, (np.ndarray, (0,), b"b"),
                              (1, (2 ** 70, 0), np.dtype("u1"), False, b""))
    _write_test_batch(tmp_path, batch)
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 batch"):
        load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_valid_small_batch_still_loads(tmp_path, protocol):
    batch = _batch(n=3, seed=1)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load_cifar10(tmp_path, "test")
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x.reshape(3, -1), batch[b"data"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, batch[b"labels"])


def test_batch_of_genuine_size_still_loads(tmp_path):
    # 10,000 labels and 10,000 file names, as in every genuine CIFAR-10 batch
    batch = _batch(n=10_000, seed=2)
    path = _write_test_batch(tmp_path, batch) / "test_batch"
    data, y = datasets._read_cifar_batch(path)
    assert data.shape == (10_000, 3072) and y.shape == (10_000,)
    np.testing.assert_array_equal(y, batch[b"labels"])
