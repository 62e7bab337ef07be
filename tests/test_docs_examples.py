"""The docs' Python examples run.

Every ```python block of the files in DOCS runs, in order, in one namespace per file (a block
may use what an earlier block of its file defined, doctests included), in a temporary working
folder, as the module ``__docs__`` (so that a dataclass defined there finds its module). A block
that starts with ``>>>`` is a doctest: its output must match (ELLIPSIS and NORMALIZE_WHITESPACE
on). A block right after a ``<!-- skip -->`` line is not run: one that needs data that is not
bundled, a GPU or a Dask cluster, or runs long; the prose beside it says so. Examples show real
budgets (minutes); here every ``fit`` call is scaled down to SHORT, since the test checks that
the calls are right, not what a run finds. A block that needs an optional extra which is not
installed (``pip install ...``) skips its file.
"""

from __future__ import annotations

import doctest
import functools
import sys
import types
from pathlib import Path

import pytest

import tinyevo

pytest.importorskip("sklearn")      # the examples use the bundled digits

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md",) + tuple(f"docs/{name}.md" for name in (
    "graph", "search", "mutation", "crossover", "evolution", "fit", "callbacks", "parallel",
    "export", "tabular", "sklearn", "lineage", "report"))
# not gpu.md (its one example needs a GPU) nor benchmarks.md (long runs)
SKIP = "<!-- skip -->"
SHORT = dict(generations=2, time_limit=None, target_fitness=None, population_size=3,
             batches_per_generation=2, executor=None)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for each ```python block of a Markdown ``text``: the line
    number of its first code line, its code, and whether a ``<!-- skip -->`` line precedes
    it (blank lines between allowed)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            before = [s.strip() for s in lines[:i] if s.strip()]
            start = i + 1
            i = start
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            blocks.append((start + 1, "\n".join(lines[start:i]) + "\n",
                           bool(before) and before[-1] == SKIP))
        i += 1
    return blocks


def test_python_blocks_are_found_and_the_skip_marker_is_honoured():
    text = ("intro\n```python\nx = 1\n```\n<!-- skip -->\n\n```python\nlong()\n```\n"
            "```bash\nls\n```\n```python\n>>> 1 + 1\n2\n```\n")
    assert python_blocks(text) == [(3, "x = 1\n", False), (8, "long()\n", True),
                                   (14, ">>> 1 + 1\n2\n", False)]


@pytest.mark.parametrize("doc", DOCS)
def test_the_examples_run(doc, tmp_path, monkeypatch):
    short = _scaled_down(tinyevo.fit)
    for owner in (tinyevo, tinyevo.app, sys.modules["tinyevo.app.fitting"]):
        monkeypatch.setattr(owner, "fit", short)
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("__docs__")   # registered, as a script's __main__ is: dataclasses
    monkeypatch.setitem(sys.modules, module.__name__, module)   # look their module up there
    namespace = module.__dict__
    blocks = [b for b in python_blocks((ROOT / doc).read_text()) if not b[2]]
    assert blocks, f"{doc} has no Python example to run"
    for line, code, _ in blocks:
        where = f"{doc}:{line}"
        try:
            if code.lstrip().startswith(">>>"):
                _run_doctest(code, namespace, where)
            else:
                exec(compile(code, where, "exec"), namespace)
        except ImportError as err:
            if _missing_extra(err):
                pytest.skip(f"{where} needs what is not installed: {err}")
            raise


def test_fit_md_lists_every_setting():
    from dataclasses import fields

    from tinyevo.app import FitConfig

    text = (ROOT / "docs/fit.md").read_text()
    assert [f.name for f in fields(FitConfig) if f"| `{f.name}` |" not in text] == []


def _scaled_down(fit):
    @functools.wraps(fit)
    def short_fit(*args, **kwargs):
        return fit(*args, **{**kwargs, **SHORT})
    return short_fit


def _run_doctest(code: str, namespace: dict, where: str) -> None:
    test = doctest.DocTestParser().get_doctest(code, namespace, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert not runner.failures, "".join(report)
    namespace.update(test.globs)        # the doctest ran on a copy: later blocks see its names


def _missing_extra(err: ImportError) -> bool:
    """An optional dependency that is not installed (not a name missing from tinyevo)."""
    if isinstance(err, ModuleNotFoundError):
        return not (err.name or "").startswith("tinyevo")
    return "pip install" in str(err)
