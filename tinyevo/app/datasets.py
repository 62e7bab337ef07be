"""Datasets from files already on disk: nothing here ever downloads anything.

Every loader returns ``(x, y)`` with ``x`` float32, batch first and channels first, and ``y``
int64 class labels:

==========================  ======================  =============================================
loader                      ``x``                   source
==========================  ======================  =============================================
:func:`load_digits`         (N, 1, 8, 8) in [0, 1]  scikit-learn's bundled digits (``app`` extra)
:func:`load_mnist`          (N, 1, 28, 28) in [0,1] MNIST IDX files, gzipped or not
:func:`load_fashion_mnist`  (N, 1, 28, 28) in [0,1] Fashion-MNIST IDX files (same format)
:func:`load_cifar10`        (N, 3, 32, 32) in [0,1] CIFAR-10 "python version" batches
:func:`load_npz`            as stored, cast         a user's own ``.npz`` with ``x`` and ``y``
==========================  ======================  =============================================

:func:`load_dataset` turns the command line's ``--data`` strings into ``(train, test)``:

    >>> (x, y), (x_test, y_test) = load_dataset("digits")
    >>> x.shape, x_test.shape
    ((1346, 1, 8, 8), (451, 1, 8, 8))

The CIFAR-10 batches are Python pickles. They are read with a restricted unpickler that builds
only plain containers and uint8 NumPy arrays, so a tampered file cannot run code, and that keeps
the work bounded by the file's size, so a small tampered file cannot hang the loader either
(:mod:`tinyevo.app._cifar`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinyevo.app._cifar import read_batch
from tinyevo.app.io import read_npz

__all__ = [
    "load_dataset", "load_digits", "load_mnist", "load_fashion_mnist", "load_cifar10",
    "load_npz", "read_idx", "stratified_split", "DIGITS_SPLIT_SEED", "TEST_FRACTION",
]

Arrays = tuple[np.ndarray, np.ndarray]

#: The seed of the fixed train/test split of the digits (and of ``.npz`` files with only x, y).
DIGITS_SPLIT_SEED = 0
#: The share of each class held out as the test set by :func:`stratified_split`.
TEST_FRACTION = 0.25

_SPLITS = ("train", "test", "all")
_INSTALL_APP = "pip install 'tinyevo[app]'"


def load_dataset(spec: str | os.PathLike) -> tuple[Arrays, Arrays]:
    """``(train, test)``, each ``(x, y)``, for a ``--data`` string of the ``tinyevo`` command.

    Accepted forms: ``"digits"``, ``"mnist:DIR"``, ``"fashion-mnist:DIR"``, ``"cifar10:DIR"``
    and a path to a ``.npz`` file (``"npz:PATH"`` also works for names that do not end in .npz).

        >>> (x, y), (x_test, y_test) = load_dataset("mnist:~/data/mnist")  # doctest: +SKIP
    """
    text = os.fspath(spec).strip()
    if text.lower() == "digits":
        return load_digits("train"), load_digits("test")
    if text.lower().endswith(".npz") and not text.lower().startswith("npz:"):
        return load_npz(text, "train"), load_npz(text, "test")
    kind, sep, location = text.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if sep and location.strip() and kind in _DIR_LOADERS:
        loader = _DIR_LOADERS[kind]
        return loader(location.strip(), "train"), loader(location.strip(), "test")
    if sep and location.strip() and kind == "npz":
        return load_npz(location.strip(), "train"), load_npz(location.strip(), "test")
    raise ValueError(
        f"unknown dataset {text!r}: expected 'digits', 'mnist:DIR', 'fashion-mnist:DIR', "
        "'cifar10:DIR' or the path of a .npz file with arrays x and y "
        "(for example --data mnist:~/data/mnist)")


# --- digits ---------------------------------------------------------------------------------------

def load_digits(split: str = "train") -> Arrays:
    """scikit-learn's 1,797 handwritten digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels.

    The data ships inside scikit-learn (install it with ``pip install 'tinyevo[app]'``); nothing is
    downloaded. ``split`` is ``"train"`` (1,346 images), ``"test"`` (451) or ``"all"`` (1,797).
    The split is fixed: :func:`stratified_split` with seed :data:`DIGITS_SPLIT_SEED` holds out a
    quarter of every class (rounded), the same on every machine and NumPy version. Samples keep
    the order of the original data set.

        >>> x, y = load_digits("test")
        >>> x.shape, x.dtype, y.dtype
        ((451, 1, 8, 8), dtype('float32'), dtype('int64'))
    """
    _check_split(split)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn, which ships the digits data set; install it with "
            f"{_INSTALL_APP} (or pip install scikit-learn)") from err
    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    if split == "all":
        return x, y
    train, test = stratified_split(y, TEST_FRACTION, seed=DIGITS_SPLIT_SEED)
    index = train if split == "train" else test
    return x[index], y[index]


def stratified_split(y: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_index, test_index)`` that hold out ``test_fraction`` of every class.

    Each class gives ``floor(n_class * test_fraction + 0.5)`` samples to the test set, drawn with
    ``numpy.random.RandomState(seed)``: NumPy freezes that legacy generator's stream, so the
    split never changes across versions. Integer labels split per class; float targets
    (regression, one-hot) split as a single group.

        >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25)
        >>> len(train), len(test)
        (6, 2)
    """
    y = np.asarray(y)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    groups = y if y.ndim == 1 and y.dtype.kind in "iub" else np.zeros(len(y), dtype=np.int64)
    rs = np.random.RandomState(seed)
    test = []
    for label in np.unique(groups):
        members = np.flatnonzero(groups == label)
        n_test = int(np.floor(len(members) * test_fraction + 0.5))
        test.append(members[rs.permutation(len(members))[:n_test]])
    test_index = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test_index] = False
    return np.flatnonzero(mask), test_index


# --- MNIST and Fashion-MNIST (IDX files) ---------------------------------------------------------

def load_mnist(directory: str | os.PathLike, split: str = "train") -> Arrays:
    """MNIST from its IDX files in ``directory``: (N, 1, 28, 28) float32 in [0, 1], int64 labels.

    Looks for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``split="train"``,
    60,000 images) or ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``"test"``,
    10,000), each plain or ``.gz``, with ``.idx`` in place of ``-idx`` too, in ``directory`` or its
    ``raw/`` subfolder (torchvision's layout). ``"all"`` concatenates train and test.

        >>> x, y = load_mnist("~/data/mnist", "test")  # doctest: +SKIP
    """
    return _load_idx_pair(directory, split, "MNIST")


def load_fashion_mnist(directory: str | os.PathLike, split: str = "train") -> Arrays:
    """Fashion-MNIST from its IDX files in ``directory``; names and format as :func:`load_mnist`.

        >>> x, y = load_fashion_mnist("~/data/fashion", "train")  # doctest: +SKIP
    """
    return _load_idx_pair(directory, split, "Fashion-MNIST")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in one IDX file (gzipped or not; recognised by content, not by name).

    The header is two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
    dimensions, then each dimension as a big-endian uint32; the data follows, big-endian.

        >>> images = read_idx("t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: only {len(raw)} bytes, shorter than the "
                         "4-byte header; the file is truncated or empty — download it again")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file: magic number 0x{raw[:4].hex()}, expected 0x0000TTNN with "
            "type TT in 08..0e (MNIST images: 0x00000803, labels: 0x00000801); check that this "
            "is the right file and that it is not corrupted")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"the file has {len(raw)}; download it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX data {what}: shape {shape} of {dtype.name} needs "
                         f"{expected} bytes after the header, found {found}; the file is damaged "
                         "or incomplete — download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def _load_idx_pair(directory: str | os.PathLike, split: str, name: str) -> Arrays:
    _check_split(split)
    if split == "all":
        parts = [_load_idx_pair(directory, s, name) for s in ("train", "test")]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    root = _existing_dir(directory, name)
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_file(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"],
                             name)
    labels_path = _find_file(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"],
                             name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W) "
                         f"(magic 0x00000803), got {images.dtype.name} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,) (magic 0x00000801), "
                         f"got {labels.dtype.name} of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{name} {split} files disagree: {len(images)} images in {images_path} "
                         f"but {len(labels)} labels in {labels_path}; one of them is from "
                         "another set or damaged")
    x = images.astype(np.float32)[:, None] / 255.0
    return x, labels.astype(np.int64)


def _find_file(root: Path, stems: list[str], name: str) -> Path:
    """The first of ``stem`` / ``stem.gz`` in ``root`` or ``root/raw``; plain files win."""
    candidates = [folder / (stem + ext) for folder in (root, root / "raw")
                  for stem in stems for ext in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {name} file {stems[0]}[.gz] in {root} (nor in {root / 'raw'}); expected the four "
        "standard IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not). tinyevo never "
        "downloads data: fetch them yourself and point to their folder")


def _read_maybe_gzip(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # some tools unpack .gz downloads but keep the name
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: damaged gzip data ({err}); download the file again") from err


# --- CIFAR-10 (python version) ------------------------------------------------------------------

def load_cifar10(directory: str | os.PathLike, split: str = "train") -> Arrays:
    """CIFAR-10 "python version" batches: (N, 3, 32, 32) float32 in [0, 1] and int64 labels.

    ``directory`` holds ``data_batch_1`` ... ``data_batch_5`` (``split="train"``, 50,000 images)
    and ``test_batch`` (``"test"``, 10,000), or is the folder that contains
    ``cifar-10-batches-py``. The batches are pickles; they are read with an unpickler that allows
    nothing but NumPy's array reconstruction, so a tampered file raises instead of running code.

        >>> x, y = load_cifar10("~/data/cifar-10-batches-py", "test")  # doctest: +SKIP
    """
    _check_split(split)
    root = _existing_dir(directory, "CIFAR-10")
    if not (root / "test_batch").exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    names["all"] = names["train"] + names["test"]
    missing = [n for n in names[split] if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root}: missing CIFAR-10 batch file(s) {', '.join(missing)}; expected the "
            "'python version' files data_batch_1..data_batch_5 and test_batch (from "
            "cifar-10-python.tar.gz, unpacked). tinyevo never downloads data")
    parts = [read_batch(root / n) for n in names[split]]
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return x, np.concatenate([p[1] for p in parts])


# --- the user's own .npz ------------------------------------------------------------------------

def load_npz(path: str | os.PathLike, split: str = "all") -> Arrays:
    """A user's own ``.npz`` with arrays ``x`` and ``y``, or ``x_train``/``y_train``/``x_test``/...

    The file holds ``x`` and ``y``, or ``x_train``, ``y_train``, ``x_test`` and ``y_test``.
    ``x`` must be numeric with 2 to 4 dimensions, batch first: (N, F), (N, C, L) or (N, C, H, W);
    it is cast to float32 as it is (scale it yourself). ``y`` is (N,) integer labels (returned as
    int64) or float targets of shape (N,) or (N, K) (returned as float32). With only ``x`` and
    ``y``, ``split="train"``/``"test"`` apply :func:`stratified_split` (a quarter held out, seed
    :data:`DIGITS_SPLIT_SEED`); with the four arrays, ``"all"`` concatenates them. Loading never
    unpickles (``allow_pickle=False``).

        >>> np.savez("mine.npz", x=np.zeros((8, 5)), y=np.arange(8) % 2)  # doctest: +SKIP
        >>> x, y = load_npz("mine.npz", "train")  # doctest: +SKIP
    """
    _check_split(split)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a .npz made with "
                                "numpy.savez(path, x=..., y=...)")
    arrays = _read_npz_arrays(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        train = _check_xy(path, arrays["x_train"], arrays["y_train"], "_train")
        test = _check_xy(path, arrays["x_test"], arrays["y_test"], "_test")
        if train[1].dtype != test[1].dtype:
            raise ValueError(f"{path}: y_train holds {train[1].dtype} and y_test {test[1].dtype} "
                             "(after casting); store labels of one kind in both: integers for "
                             "classes, floats for targets")
        if train[0].shape[1:] != test[0].shape[1:]:
            raise ValueError(f"{path}: x_train samples have shape {train[0].shape[1:]} "
                             f"but x_test samples {test[0].shape[1:]}")
        if split != "all":
            return train if split == "train" else test
        return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])
    if not {"x", "y"} <= arrays.keys():
        raise ValueError(
            f"{path}: expected arrays named x and y (or x_train, y_train, x_test, y_test), "
            f"found {sorted(arrays) or 'none'}; save with numpy.savez(path, x=x, y=y)")
    x, y = _check_xy(path, arrays["x"], arrays["y"], "")
    if split == "all":
        return x, y
    train_index, test_index = stratified_split(y, TEST_FRACTION, seed=DIGITS_SPLIT_SEED)
    index = train_index if split == "train" else test_index
    return x[index], y[index]


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_npz(path)
    except ValueError as err:
        raise ValueError(f"{err}. A data set .npz is written with numpy.savez(path, x=x, y=y), "
                         "numbers only") from err


def _check_xy(path: Path, x: np.ndarray, y: np.ndarray, suffix: str) -> Arrays:
    xn, yn = "x" + suffix, "y" + suffix
    if x.dtype.kind not in "biuf" or not 2 <= x.ndim <= 4:
        raise ValueError(f"{path}: {xn} must be a numeric array of shape (N, F), (N, C, L) or "
                         f"(N, C, H, W), got {x.dtype} of shape {x.shape}")
    if y.dtype.kind in "iu" and y.ndim == 1:
        y = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise ValueError(f"{path}: class labels {yn} must be >= 0, found {y.min()}")
    elif y.dtype.kind == "f" and y.ndim in (1, 2):
        y = y.astype(np.float32)
    else:
        raise ValueError(f"{path}: {yn} must be integer labels of shape (N,) or float targets of "
                         f"shape (N,) or (N, K), got {y.dtype} of shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{path}: {xn} has {len(x)} samples but {yn} has {len(y)}")
    return x.astype(np.float32), y


# --- shared helpers -----------------------------------------------------------------------------

def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _existing_dir(directory: str | os.PathLike, name: str) -> Path:
    root = Path(directory).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{name} directory {root} does not exist; pass the folder that "
                                f"holds the {name} files (tinyevo never downloads data)")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, but {name} needs the folder that holds its "
                                 "files")
    return root


_DIR_LOADERS: dict[str, Callable[[str, str], Arrays]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "fashionmnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar-10": load_cifar10,
}
