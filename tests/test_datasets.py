"""Data loaders: digits split, IDX parsing, safe CIFAR-10 unpickling, .npz files, --data specs."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from tinyevo.app import datasets
from tinyevo.app.datasets import (
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_npz,
    read_idx,
    stratified_split,
)

# --- digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return {split: load_digits(split) for split in ("train", "test", "all")}


def test_digits_shapes_dtypes_and_range(digits):
    x, y = digits["all"]
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    assert len(digits["train"][0]) + len(digits["test"][0]) == 1797
    assert len(digits["test"][0]) == 451


def test_digits_split_is_deterministic(digits):
    for split in ("train", "test"):
        x, y = load_digits(split)
        np.testing.assert_array_equal(x, digits[split][0])
        np.testing.assert_array_equal(y, digits[split][1])


def test_digits_split_is_disjoint_and_complete(digits):
    train, test = stratified_split(digits["all"][1])
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    np.testing.assert_array_equal(digits["train"][0], digits["all"][0][train])
    np.testing.assert_array_equal(digits["test"][0], digits["all"][0][test])


def test_digits_split_is_stratified(digits):
    counts_all = np.bincount(digits["all"][1], minlength=10)
    counts_test = np.bincount(digits["test"][1], minlength=10)
    assert np.all(np.abs(counts_test - counts_all / 4) <= 0.5)


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"tinyevo\[app\]"):
        load_digits()


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        load_digits("valid")


def test_stratified_split_float_targets_and_fraction():
    train, test = stratified_split(np.linspace(0, 1, 40).astype(np.float32), 0.25, seed=3)
    assert len(test) == 10 and len(train) == 30
    with pytest.raises(ValueError, match="between 0 and 1"):
        stratified_split(np.arange(4), 1.0)


# --- MNIST IDX ------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, data: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _make_mnist(folder, n_train=5, n_test=3, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(folder / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), gz)
        _write(folder / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)
        arrays[prefix] = images, labels
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_plain_and_gzipped_idx(tmp_path, gz):
    arrays = _make_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_mnist(tmp_path, split)
        images, labels = arrays[prefix]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == np.float32
        assert y.dtype == np.int64
        np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)
    x, y = load_fashion_mnist(tmp_path, "all")
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)


def test_mnist_in_raw_subfolder_and_gz_named_file_that_is_plain(tmp_path):
    arrays = _make_mnist(tmp_path / "raw")
    # a browser unpacked the download but kept the .gz name
    os.rename(tmp_path / "raw" / "t10k-labels-idx1-ubyte",
              tmp_path / "raw" / "t10k-labels-idx1-ubyte.gz")
    x, y = load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(y, arrays["t10k"][1])


def test_read_idx_big_endian_types(tmp_path):
    for array in (np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
                  np.linspace(-1, 1, 5, dtype=np.float32)):
        path = _write(tmp_path / "a.idx", _idx_bytes(array), gz=False)
        np.testing.assert_array_equal(read_idx(path), array)


def test_mnist_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*never downloads"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    _make_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 0x504b0304"):
        load_mnist(tmp_path)


def test_mnist_truncated_data(tmp_path):
    _make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"truncated.*needs 3920 bytes.*found 3910"):
        load_mnist(tmp_path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        load_mnist(tmp_path)


def test_mnist_damaged_gzip(tmp_path):
    _make_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz.*gzip"):
        load_mnist(tmp_path, "test")


def test_mnist_count_mismatch_and_swapped_files(tmp_path):
    _make_mnist(tmp_path)
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W\)"):
        load_mnist(tmp_path)


# --- CIFAR-10 -------------------------------------------------------------------------------------


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return {b"batch_label": b"tiny batch", b"data": data, b"labels": labels,
            b"filenames": [b"img%d.png" % i for i in range(n)]}


def _make_cifar(folder, protocol=pickle.DEFAULT_PROTOCOL):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _cifar_batch(2 + i % 2, seed=i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_batches(tmp_path, protocol):
    batches = _make_cifar(tmp_path, protocol)
    x, y = load_cifar10(tmp_path, "test")
    expected = batches["test_batch"]
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x.reshape(3, -1), expected[b"data"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, expected[b"labels"])
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (12, 3, 32, 32) and y.shape == (12,)
    # channel-first: the first 1024 values of a row are the red plane
    np.testing.assert_allclose(x[0, 0].ravel(), batches["data_batch_1"][b"data"][0, :1024] / 255)


def test_cifar10_reads_python2_style_pickle(tmp_path):
    # The distributed files were written by Python 2's cPickle: str keys and data, and the
    # globals numpy.core.multiarray._reconstruct / numpy.ndarray / numpy.dtype.
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)

    def s(b):  # SHORT_BINSTRING or BINSTRING: a Python 2 str
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

    array = (b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n"
             b"K\x00\x85" + s(b"b") + b"\x87R"
             b"(K\x01K\x02M\x00\x0c\x86" b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
             b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t" b"b"
             b"\x89" + s(data.tobytes()) + b"tb")
    stream = (b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](K\x03K\x07e" + b"u.")
    (tmp_path / "test_batch").write_bytes(stream)
    x, y = load_cifar10(tmp_path, "test")
    np.testing.assert_allclose(x.reshape(2, -1), data / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, [3, 7])


def test_cifar10_parent_folder(tmp_path):
    _make_cifar(tmp_path / "cifar-10-batches-py")
    x, y = load_dataset(f"cifar10:{tmp_path}")[1]
    assert x.shape == (3, 3, 32, 32)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalExploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
def test_cifar10_refuses_malicious_pickle_without_running_it(tmp_path, exploit):
    _make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    batch = _cifar_batch(2, seed=0)
    batch[b"labels"] = exploit(marker)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"test_batch.*refused global"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()


def test_cifar10_refuses_object_arrays_and_subclasses(tmp_path):
    _make_cifar(tmp_path)
    batch = _cifar_batch(2, seed=0)
    batch[b"data"] = np.array([None, 1], dtype=object)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="refused dtype"):
        load_cifar10(tmp_path, "test")
    batch[b"data"] = np.ma.masked_array(np.zeros((2, 3072), np.uint8))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="refused global numpy.ma"):
        load_cifar10(tmp_path, "test")


def test_cifar10_malformed_batches(tmp_path):
    _make_cifar(tmp_path)
    path = tmp_path / "test_batch"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(tmp_path, "test")
    batch = _cifar_batch(2, seed=0)
    batch[b"data"] = batch[b"data"][:, :100]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, 3072\)"):
        load_cifar10(tmp_path, "test")
    batch = _cifar_batch(2, seed=0)
    batch[b"labels"] = [1]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        load_cifar10(tmp_path, "test")
    path.write_bytes(pickle.dumps({b"data": batch[b"data"], b"fine_labels": [1, 2]}))
    with pytest.raises(ValueError, match="CIFAR-100"):
        load_cifar10(tmp_path, "test")
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3.*never downloads"):
        load_cifar10(tmp_path, "train")


# --- .npz and load_dataset ------------------------------------------------------------------------


def test_npz_with_x_and_y(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3, 16)).astype(np.float64)
    y = np.repeat(np.arange(4), 12).astype(np.int32)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    xa, ya = load_npz(tmp_path / "mine.npz")
    assert xa.dtype == np.float32 and ya.dtype == np.int64 and xa.shape == x.shape
    (xt, yt), (xs, ys) = load_dataset(str(tmp_path / "mine.npz"))
    assert len(xt) == 36 and len(xs) == 12
    np.testing.assert_array_equal(np.bincount(ys), [3, 3, 3, 3])


def test_npz_with_explicit_train_and_test(tmp_path):
    x = np.arange(30, dtype=np.uint8).reshape(6, 5)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6), x_test=x[:2],
             y_test=np.array([0, 1]))
    (xt, yt), (xs, ys) = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert xt.shape == (6, 5) and xs.shape == (2, 5) and ys.dtype == np.int64
    np.testing.assert_array_equal(xt, x)  # cast to float32, not rescaled
    xa, ya = load_npz(tmp_path / "d.npz", "all")
    assert xa.shape == (8, 5) and ya.tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    np.savez(tmp_path / "mixed.npz", x_train=x, y_train=np.arange(6), x_test=x[:2],
             y_test=np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="y_train .*int64.* y_test .*float32"):
        load_npz(tmp_path / "mixed.npz", "test")


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "names.npz", images=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(ValueError, match=r"expected arrays named x and y.*'images', 'labels'"):
        load_npz(tmp_path / "names.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{}, {}], dtype=object), y=np.zeros(2, int))
    with pytest.raises(ValueError, match="obj.npz"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "shape.npz", x=np.zeros(5), y=np.zeros(5, int))
    with pytest.raises(ValueError, match=r"x must be a numeric array of shape \(N, F\)"):
        load_npz(tmp_path / "shape.npz")
    np.savez(tmp_path / "count.npz", x=np.zeros((5, 2)), y=np.zeros(4, int))
    with pytest.raises(ValueError, match="x has 5 samples but y has 4"):
        load_npz(tmp_path / "count.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")


def test_load_dataset_specs(tmp_path, monkeypatch):
    _make_mnist(tmp_path / "m")
    (x, y), (xt, yt) = load_dataset(f"mnist:{tmp_path / 'm'}")
    assert x.shape == (5, 1, 28, 28) and xt.shape == (3, 1, 28, 28)
    (x, y), _ = load_dataset(f"fashion-mnist:{tmp_path / 'm'}")
    assert len(x) == 5
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet:/x'.*'mnist:DIR'"):
        load_dataset("imagenet:/x")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist:")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nothing'}")
    monkeypatch.setattr(datasets, "load_digits", lambda split: (split, None))
    assert load_dataset("digits") == (("train", None), ("test", None))
