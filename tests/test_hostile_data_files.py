"""Hostile dataset files (issue #22)."""

import pickle
import struct

import numpy as np
import pytest

from tinyevo.app import _cifar
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


def _shared_tuple_ops(levels=40):
    """Opcodes (protocol 3, no PROTO, frame or STOP) that build t = (t, t) nested ``levels`` times.

    Hashing t walks 2**levels tuples, so these tests must never put t in a dict or set
    themselves: the streams are spliced by hand.
    """
    t = ()
    for _ in range(levels):
        t = (t, t)
    return pickle.dumps(t, protocol=3)[2:-1]


class _Reduces:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state``, or SETITEMs of ``items``."""

    def __init__(self, fn, args, state=None, items=None):
        self.fn, self.args, self.state, self.items = fn, args, state, items

    def __reduce__(self):
        if self.items is not None:
            return self.fn, self.args, self.state, None, iter(self.items)
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
    resolved = _cifar._resolve(_bomb(6))
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
    monkeypatch.setattr(_cifar, "_MAX_VALUES", 100)
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
    ({7: 1, b"labels": 2}, r"needs keys 'data' and 'labels', found \['7', 'labels'\].*CIFAR-100"),
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


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_valid_small_batch_still_loads(tmp_path, protocol):
    batch = _batch(n=3, seed=1)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load_cifar10(tmp_path, "test")
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x.reshape(3, -1), batch[b"data"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, batch[b"labels"])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batch_of_genuine_size_still_loads(tmp_path, protocol):
    # 10,000 labels and 10,000 file names, as in every genuine CIFAR-10 batch
    batch = _batch(n=10_000, seed=2)
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    data, y = _cifar.read_batch(path)
    assert data.shape == (10_000, 3072) and y.shape == (10_000,)
    np.testing.assert_array_equal(y, batch[b"labels"])


@pytest.mark.parametrize("opcodes", [
    pytest.param(lambda t: b"\x80\x03}" + t + b"K\x01s.", id="dict key, SETITEM"),
    pytest.param(lambda t: b"\x80\x03}(C\x04dataK\x01" + t + b"K\x01u.", id="dict key, SETITEMS"),
    pytest.param(lambda t: b"\x80\x03(" + t + b"K\x01d.", id="dict key, DICT"),
    pytest.param(lambda t: b"\x80\x04\x8f(" + t + b"\x90.", id="set element, ADDITEMS"),
    pytest.param(lambda t: b"\x80\x04(" + t + b"\x91.", id="frozenset element, FROZENSET"),
])
def test_shared_tuple_bomb_is_refused_before_it_is_hashed(tmp_path, opcodes):
    # About 200 bytes; building the dict or set would hash 2**40 tuples (hours).
    raw = opcodes(_shared_tuple_ops(40))
    assert len(raw) < 300
    _write_test_batch(tmp_path, raw)
    with pytest.raises(ValueError, match=r"test_batch: refused or malformed pickle: refused a "
                                         r"dict key or set element of type tuple.*"
                                         r"not a genuine CIFAR-10 batch"):
        load_cifar10(tmp_path, "test")


def test_items_for_an_array_are_refused(tmp_path):
    # Protocol 5 rebuilds arrays with _frombuffer; a SETITEM on one would index it with the
    # key, and NumPy walks a list index of shared lists as a tree of 2**40.
    target = np.zeros(3, np.uint8)
    batch = _batch()
    batch[b"data"] = _Reduces(*target.__reduce_ex__(5)[:2], items=[(_bomb(40), 1)])
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=5))
    with pytest.raises(ValueError, match=r"test_batch: refused or malformed pickle: refused "
                                         r"items for a ndarray"):
        load_cifar10(tmp_path, "test")


def test_sets_and_keys_of_plain_values_still_load(tmp_path):
    batch = _batch()
    batch.update({1: None, 2.5: b"x", None: True, "ids": {1, b"a", "b", False},
                  b"tags": frozenset({b"cat", 3, None})})
    x, y = load_cifar10(_write_test_batch(tmp_path, batch), "test")
    assert x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(y, batch[b"labels"])


def test_huge_bytearray_size_is_not_allocated(tmp_path):
    # BYTEARRAY8 (protocol 5) claiming 2**62 bytes in a 30-byte file: refused as truncated,
    # where allocating the claimed size first would raise MemoryError (or exhaust memory).
    _write_test_batch(tmp_path, b"\x80\x05\x96" + struct.pack("<Q", 2 ** 62) + bytes(16) + b".")
    with pytest.raises(ValueError, match=r"test_batch: refused or malformed pickle: "
                                         r"BYTEARRAY8 of 4611686018427387904 bytes truncated"):
        load_cifar10(tmp_path, "test")


def test_truncated_opcode_argument_is_a_clear_error(tmp_path):
    # BININT with one of its four bytes: the pure-Python unpickler raises struct.error
    _write_test_batch(tmp_path, b"\x80\x02J\x01")
    with pytest.raises(ValueError, match=r"test_batch: not a readable CIFAR-10 batch \(error: "
                                         r".*truncated or damaged"):
        load_cifar10(tmp_path, "test")
