"""Atomic persistence: JSON and .npz round trips, crashes mid-write, checkpoint directories."""

import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tinyevo
from tinyevo.app import io
from tinyevo.app.io import (
    atomic_dir,
    atomic_open,
    complete_dir,
    read_json,
    read_npz,
    recover_dir,
    write_json,
    write_npz,
    write_text,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- JSON -----------------------------------------------------------------------------------------


def test_json_round_trip_converts_numpy(tmp_path):
    obj = {
        "generation": np.int64(3), "fitness": np.float32(0.5), "ok": np.bool_(True),
        "sizes": (np.int32(4), 5), "weights": np.arange(4, dtype=np.float32).reshape(2, 2),
        "nested": [{"name": np.str_("dense"), "lr": np.float64(1e-3)}], "none": None,
        np.int64(7): "numpy key",
    }
    write_json(tmp_path / "s.json", obj)
    back = read_json(tmp_path / "s.json")
    assert back == {"generation": 3, "fitness": 0.5, "ok": True, "sizes": [4, 5],
                    "weights": [[0.0, 1.0], [2.0, 3.0]],
                    "nested": [{"name": "dense", "lr": 1e-3}], "none": None, "7": "numpy key"}
    assert type(back["generation"]) is int and type(back["ok"]) is bool


def test_json_keeps_nan_and_infinity(tmp_path):
    write_json(tmp_path / "f.json", {"fitness": [np.float32("nan"), math.inf, -math.inf]})
    assert "NaN" in (tmp_path / "f.json").read_text()
    fitness = read_json(tmp_path / "f.json")["fitness"]
    assert math.isnan(fitness[0]) and fitness[1:] == [math.inf, -math.inf]


def test_json_refuses_what_it_cannot_hold_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match=r"obj\['population'\]\[1\]: set cannot be stored"):
        write_json(tmp_path / "s.json", {"population": [1, {2}]})
    with pytest.raises(TypeError, match="complex"):
        write_json(tmp_path / "s.json", np.complex64(1j))
    with pytest.raises(TypeError, match="dtype object"):
        write_json(tmp_path / "s.json", np.array([None]))
    assert list(tmp_path.iterdir()) == []


def test_read_json_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"generation": 3')
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


# --- atomic single files --------------------------------------------------------------------------


def test_crash_at_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json(path, {"generation": 1})

    def crash(src, dst):
        raise OSError("simulated crash at rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_json(path, {"generation": 2})
    with pytest.raises(OSError, match="simulated crash"):
        write_npz(tmp_path / "w.npz", {"w": np.zeros(3)})
    monkeypatch.undo()
    assert read_json(path) == {"generation": 1}
    assert not (tmp_path / "w.npz").exists()
    assert _leftovers(tmp_path) == []


def test_crash_inside_the_write_keeps_old_file(tmp_path):
    path = tmp_path / "log.csv"
    write_text(path, "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_open(path, "w") as f:
        f.write("half a new fi")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_killed_write_leaves_only_a_stray_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    write_npz(path, {"w": np.ones(3)})

    class Killed(BaseException):
        pass

    def kill(src, dst):
        raise Killed

    # a kill runs no cleanup: keep the temp file as a real SIGKILL would
    monkeypatch.setattr(os, "replace", kill)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)
    with pytest.raises(Killed):
        write_npz(path, {"w": np.zeros(1000)})
    monkeypatch.undo()
    assert [name.endswith(".tmp") for name in _leftovers(tmp_path)] == [True]
    np.testing.assert_array_equal(read_npz(path)["w"], np.ones(3))


def test_atomic_open_checks_mode_and_folder(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "a", "ab"):
        pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_text(tmp_path / "no" / "a.txt", "x")


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


# --- npz ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_npz_round_trip(tmp_path, compress):
    arrays = {
        "layer.0.weight": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32),
        "steps": np.int64(12), "mask": np.array([True, False]), "empty": np.zeros((0, 5)),
        "allow_pickle": np.arange(3), "fortran": np.asfortranarray(np.ones((2, 3), ">f8")),
    }
    write_npz(tmp_path / "w.npz", arrays, compress=compress)
    back = read_npz(tmp_path / "w.npz")
    assert back.keys() == arrays.keys()
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == np.asarray(value).dtype
    with np.load(tmp_path / "w.npz") as plain:  # an ordinary .npz
        assert sorted(plain.files) == sorted(arrays)


def test_npz_refuses_pickle(tmp_path):
    with pytest.raises(TypeError, match="dtype object"):
        write_npz(tmp_path / "w.npz", {"x": np.array([{}, None], dtype=object)})
    with pytest.raises(ValueError, match="non-empty strings"):
        write_npz(tmp_path / "w.npz", {1: np.zeros(2)})
    with pytest.raises(TypeError, match="mapping"):
        write_npz(tmp_path / "w.npz", [np.zeros(2)])
    assert not (tmp_path / "w.npz").exists()
    np.savez(tmp_path / "obj.npz", x=np.array([{}, None], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        read_npz(tmp_path / "obj.npz")


def test_read_npz_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        read_npz(tmp_path / "nothing.npz")
    write_npz(tmp_path / "w.npz", {"w": np.zeros(100)})
    data = (tmp_path / "w.npz").read_bytes()
    (tmp_path / "w.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="w.npz: not a readable .npz"):
        read_npz(tmp_path / "w.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        read_npz(tmp_path / "single.npy")


# --- checkpoint directories -----------------------------------------------------------------------


def _write_checkpoint(folder: Path, version: int) -> None:
    write_json(folder / "meta.json", {"version": version})
    write_npz(folder / "weights.npz", {"w": np.full(50, version)})


def _version(folder: Path) -> int:
    """The checkpoint's version, after checking that its two files agree (it is complete)."""
    version = read_json(folder / "meta.json")["version"]
    np.testing.assert_array_equal(read_npz(folder / "weights.npz")["w"], version)
    return version


def test_atomic_dir_writes_and_replaces(tmp_path):
    path = tmp_path / "run" / "checkpoint"
    assert recover_dir(path) is None and complete_dir(path) is None
    for version in (1, 2):
        with atomic_dir(path) as staging:
            assert staging.parent == path.parent and staging != path
            _write_checkpoint(staging, version)
            if version == 2:
                assert _version(path) == 1  # the old one stays until the new one is complete
        assert _version(path) == version
    assert _leftovers(path.parent) == [] and complete_dir(path) == path


def test_atomic_dir_error_in_block_keeps_previous(tmp_path):
    path = tmp_path / "checkpoint"
    with atomic_dir(path) as staging:
        _write_checkpoint(staging, 1)
    with pytest.raises(RuntimeError), atomic_dir(path) as staging:
        write_json(staging / "meta.json", {"version": 2})
        raise RuntimeError("failed half way")
    assert _version(path) == 1 and _leftovers(tmp_path) == []


class _Killed(BaseException):
    """Stands for SIGKILL: raised where the process would die; no cleanup runs after it."""


@pytest.mark.parametrize("kill_at", ["block", "rename 1", "rename 2", "rename 3", "cleanup"])
def test_killed_checkpoint_write_recovers_a_complete_one(tmp_path, monkeypatch, kill_at):
    path = tmp_path / "checkpoint"
    with atomic_dir(path) as staging:
        _write_checkpoint(staging, 1)
    renames = []
    real_rename = os.rename

    def rename(src, dst):
        renames.append((src, dst))
        if kill_at == f"rename {len(renames)}":
            raise _Killed
        real_rename(src, dst)

    def rmtree(folder, ignore_errors=False):
        if kill_at == "cleanup" and Path(folder).name.endswith(".old"):
            raise _Killed

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)  # a killed process removes nothing
    with pytest.raises(_Killed), atomic_dir(path) as staging:
        write_json(staging / "meta.json", {"version": 2})
        if kill_at == "block":
            raise _Killed  # dies with the new checkpoint half written
        write_npz(staging / "weights.npz", {"w": np.full(50, 2)})
    monkeypatch.undo()

    expected = 1 if kill_at in ("block", "rename 1") else 2
    found = complete_dir(path)  # what a reader sees, without changing anything
    assert found is not None and _version(found) == expected
    assert recover_dir(path) == path and _version(path) == expected
    with atomic_dir(path) as staging:  # the next write cleans up every leftover
        _write_checkpoint(staging, 3)
    assert _version(path) == 3 and _leftovers(tmp_path) == []


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tinyevo.app.io import atomic_dir, write_json, write_npz
    version = 0
    while True:
        version += 1
        with atomic_dir(sys.argv[1]) as d:
            write_npz(d / "weights.npz", {"w": np.full(20000, version)})
            write_json(d / "meta.json", {"version": version})
""")


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_sigkill_during_checkpoint_loop_leaves_a_complete_checkpoint(tmp_path, delay):
    path = tmp_path / "checkpoint"
    env = dict(os.environ, PYTHONPATH=str(Path(tinyevo.__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=env,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while complete_dir(path) is None:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never produced a checkpoint"
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    found = complete_dir(path)
    assert found is not None
    version = _version(found)
    assert version >= 1
    assert recover_dir(path) == path and _version(path) == version


def test_io_module_is_exported():
    assert tinyevo.app.io is io and tinyevo.app.write_json is write_json


def test_a_json_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    bad = tmp_path / "state.json"
    bad.write_bytes(b'\xff\xfe{"generation": 3}')
    with pytest.raises(ValueError, match=r"state\.json: not UTF-8"):
        read_json(bad)
