"""Tables in CSV files: numeric feature columns and one target column, read with clear errors.

A table file has a header row naming its columns, then one row per sample. Its delimiter is a
tab for ``.tsv`` files and otherwise the most frequent of ``,`` ``;`` and tab in the header
line; fields may be quoted. Every feature cell must be a finite number; the target column holds
numbers (targets, kept as float64) or text (class labels, mapped to 0..K-1 in sorted order).

    >>> table = read_table("iris.csv", target="species")                 # doctest: +SKIP
    >>> table.x.shape, table.classes
    ((150, 4), ('setosa', 'versicolor', 'virginica'))

Reading checks the whole file and stops at the first problem with a message that names the
column, the line and the cell, and says how to fix it. Nothing is ever written to the file read.
:func:`write_table` writes a table atomically (what ``tinyevo predict`` writes).
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo.app.datasets import DIGITS_SPLIT_SEED, TEST_FRACTION, stratified_split
from tinyevo.app.io import write_text

__all__ = ["Table", "read_table", "read_columns", "read_features", "is_table_path",
           "table_text", "write_table", "TABLE_SUFFIXES"]

#: File name endings read as tables.
TABLE_SUFFIXES = (".csv", ".tsv")
# Cells that spreadsheets and pandas write for a missing value (compared lower-cased).
_MISSING = {"", "na", "n/a", "#n/a", "nan", "null", "none", "?"}
_SHOWN = 5          # columns named in full by an error message


@dataclass(frozen=True)
class Table:
    """A table's features ``x`` (float32, (N, F), in file order), its target ``y`` (float64
    targets, or int64 indices into ``classes`` when the target column holds text), the feature
    columns' names and the target's."""

    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target: str
    classes: tuple[str, ...] | None

    def split(self, test_fraction: float = TEST_FRACTION, seed: int = DIGITS_SPLIT_SEED
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``((x, y), (x_test, y_test))``: :func:`~tinyevo.app.datasets.stratified_split`
        holds out ``test_fraction`` of each class (of all samples for numeric targets)."""
        train, test = stratified_split(self.y, test_fraction, seed)
        return (self.x[train], self.y[train]), (self.x[test], self.y[test])


def is_table_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a table file (``.csv`` or ``.tsv``, any case)."""
    return os.fspath(path).strip().lower().endswith(TABLE_SUFFIXES)


def read_table(path: str | os.PathLike, target: str) -> Table:
    """The table in ``path`` with the column ``target`` as the target and every other column,
    in file order, as a feature.

        >>> read_table("houses.csv", "price").feature_names                # doctest: +SKIP
        ('rooms', 'area', 'age')
    """
    cells = _Cells(path)
    cells.need_column(target, "the target")
    if len(cells.header) < 2:
        raise ValueError(f"{cells.path}: only one column ({target!r}), so no features: expected "
                         "the features' columns beside the target's")
    t = cells.header.index(target)
    features = tuple(name for name in cells.header if name != target)
    x = cells.numbers([i for i in range(len(cells.header)) if i != t])
    y, classes = cells.target(t)
    return Table(x, y, features, target, classes)


def read_columns(path: str | os.PathLike) -> tuple[str, ...]:
    """The column names in the header of the table in ``path`` (its rows are not read).

        >>> read_columns("houses.csv")                                      # doctest: +SKIP
        ('rooms', 'area', 'age', 'price')
    """
    return tuple(_Cells(path, header_only=True).header)


def read_features(path: str | os.PathLike, names: Sequence[str]) -> np.ndarray:
    """float32 (N, len(names)): the columns ``names`` of the table in ``path``, in that order;
    other columns are ignored (not even read as numbers).

        >>> read_features("new_houses.csv", ["rooms", "area", "age"]).shape  # doctest: +SKIP
        (20, 3)
    """
    cells = _Cells(path)
    missing = [n for n in names if n not in cells.header]
    if missing:
        raise ValueError(
            f"{cells.path}: missing column(s) {_names(missing)}: the model reads the columns "
            f"{_names(names)}; the file has {_names(cells.header)}. Add the missing columns "
            "(named as in the training file)")
    return cells.numbers([cells.header.index(n) for n in names])


def table_text(header: Sequence[str], columns: Sequence[Sequence]) -> str:
    """CSV text: the ``header`` row, then a row per sample of the equally long ``columns``.
    Floats are written in their shortest exact form for their dtype.

        >>> table_text(["a", "b"], [np.array([1, 2]), ["x", "y"]])
        'a,b\\n1,x\\n2,y\\n'
    """
    if len(header) != len(columns):
        raise ValueError(f"table_text: {len(header)} names but {len(columns)} columns")
    texts = [np.asarray(c).astype(str).tolist() for c in columns]
    lengths = {len(t) for t in texts}
    if len(lengths) > 1:
        raise ValueError(f"table_text: the columns differ in length: {[len(t) for t in texts]}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*texts))
    return out.getvalue()


def write_table(path: str | os.PathLike, header: Sequence[str],
                columns: Sequence[Sequence]) -> None:
    """Write :func:`table_text` of ``header`` and ``columns`` to ``path`` atomically.

        >>> write_table("out.csv", ["prediction"], [np.array([0.5, 1.25])])  # doctest: +SKIP
    """
    write_text(path, table_text(header, columns))


class _Cells:
    """The header and the cells of a table file, each row as long as the header, with the line
    where each row starts; read once, checked for shape."""

    def __init__(self, path: str | os.PathLike, header_only: bool = False):
        self.path, self.header_only = Path(path).expanduser(), header_only
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file; expected a CSV file with a "
                                    "header row naming its columns")
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                first = next((line for line in f if line.strip()), "")
                tsv = self.path.suffix.lower() == ".tsv"
                self.delimiter = "\t" if tsv else _delimiter(first)
                f.seek(0)
                reader = csv.reader(f, delimiter=self.delimiter)
                self.header, self.rows, self.lines = self._read(reader)
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                             "save the table as UTF-8 CSV") from None

    def _read(self, reader: Any) -> tuple[list[str], list[list[str]], list[int]]:
        rows, lines, header, end = [], [], None, 0
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue                                    # a blank line
                if header is None:
                    header = self._check_header([name.strip() for name in row], start)
                    if self.header_only:
                        break
                elif len(row) != len(header):
                    raise ValueError(
                        f"{self.path}: line {start} has {len(row)} cells, the header "
                        f"{len(header)}: every row needs one cell per column (delimiter "
                        f"{self.delimiter!r}); fix or remove that row")
                else:
                    rows.append(row)
                    lines.append(start)
        except csv.Error as err:
            raise ValueError(f"{self.path}: line {reader.line_num}: unreadable CSV ({err}); "
                             "fix that line or save the table again as CSV") from None
        if header is None:
            raise ValueError(f"{self.path}: the file is empty: expected a header row naming the "
                             "columns, then one row per sample")
        if not rows and not self.header_only:
            raise ValueError(f"{self.path}: a header ({_names(header)}) but no data rows: "
                             "expected one row per sample after the header")
        return header, rows, lines

    def _check_header(self, header: list[str], line: int) -> list[str]:
        if all(_finite(name) is not None for name in header):
            raise ValueError(f"{self.path}: line {line}, the first row, holds only numbers "
                             f"({_names(header)}): expected a header row naming "
                             "the columns; add one")
        unnamed = [i + 1 for i, name in enumerate(header) if not name]
        if unnamed:
            raise ValueError(f"{self.path}: column(s) {unnamed} have no name in the header: give "
                             "every column a name, or drop those columns (pandas writes an "
                             "unnamed index column unless to_csv(..., index=False))")
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise ValueError(f"{self.path}: column name(s) {_names(twice)} appear more than once "
                             "in the header: rename the columns so that each name is unique")
        return header

    def need_column(self, name: str, role: str) -> None:
        """Raise, naming the columns and the closest names, unless the header has ``name``."""
        if name in self.header:
            return
        close = difflib.get_close_matches(name, self.header, n=3, cutoff=0.6)
        close += [h for h in self.header if h.lower() == name.lower() and h not in close]
        hint = f"; did you mean {_names(close)}?" if close else ""
        raise ValueError(f"{self.path}: no column {name!r} for {role}; the columns are "
                         f"{_names(self.header)}{hint}")

    def numbers(self, index: list[int]) -> np.ndarray:
        """float32 (N, len(index)): the columns at ``index``, each cell a finite number."""
        n, pick = len(self.rows), operator.itemgetter(*index)
        cells = map(pick, self.rows) if len(index) > 1 else ((pick(r),) for r in self.rows)
        try:
            x = np.fromiter(map(float, itertools.chain.from_iterable(cells)), dtype=np.float64,
                            count=n * len(index)).reshape(n, len(index))
        except ValueError:
            x = None
        if x is None or not np.isfinite(x).all():
            self._raise_bad_cells(index)
        return x.astype(np.float32)

    def target(self, t: int) -> tuple[np.ndarray, tuple[str, ...] | None]:
        """The target column: float64 numbers, or int64 class indices and the sorted labels."""
        labels = [row[t].strip() for row in self.rows]
        gap = next((i for i, s in enumerate(labels) if s.lower() in _MISSING), None)
        if gap is not None:
            raise ValueError(self._missing(self.header[t], gap, "the target"))
        try:
            y = np.array([float(s) for s in labels], dtype=np.float64)
        except ValueError:
            classes, y = np.unique(np.array(labels), return_inverse=True)
            return y.astype(np.int64).reshape(-1), tuple(classes.tolist())
        if not np.isfinite(y).all():
            i = int(np.argmin(np.isfinite(y)))
            raise ValueError(f"{self.path}: the target {self.header[t]!r} at line "
                             f"{self.lines[i]} is {labels[i]!r}, not a finite number; fix or "
                             "drop that row")
        return y, None

    def _raise_bad_cells(self, index: list[int]) -> None:
        """Raise for the first column of ``index`` with a cell that is not a finite number,
        naming the other such columns too."""
        bad = []
        for j in index:
            row = next((i for i, r in enumerate(self.rows) if _finite(r[j]) is None), None)
            if row is not None:
                bad.append((self.header[j], row, self.rows[row][j]))
        name, row, cell = bad[0]
        if cell.strip().lower() in _MISSING:
            message = self._missing(name, row, "a feature")
        else:
            what = ("not a finite number" if _float(cell) is not None else "not a number")
            message = (f"{self.path}: column {name!r} is not numeric: line {self.lines[row]} "
                       f"holds {cell!r}, {what}. Features must be numbers: encode a categorical "
                       "column as numbers (e.g. one column per category) or drop it; only the "
                       "target may hold text (class labels)")
            if self.delimiter == ";" and "," in cell:
                message += ("; decimal commas are not read: write numbers with a decimal point")
        others = [f"{n!r} (line {self.lines[r]}: {c!r})" for n, r, c in bad[1:_SHOWN + 1]]
        if others:
            more = f" and {len(bad) - 1 - _SHOWN} more" if len(bad) - 1 > _SHOWN else ""
            message += f". Other columns with such cells: {', '.join(others)}{more}"
        raise ValueError(message)

    def _missing(self, name: str, row: int, role: str) -> str:
        return (f"{self.path}: missing value in column {name!r} ({role}) at line "
                f"{self.lines[row]} (cell {self.rows[row][self.header.index(name)]!r}): every "
                "cell must hold a value; impute the missing values or drop those rows (or the "
                "column) first")


def _delimiter(header_line: str) -> str:
    """The most frequent of comma, semicolon and tab in the header line (comma on a tie)."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts.values())
    return "," if best == 0 or counts[","] == best else max(counts, key=counts.get)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _finite(text: str) -> float | None:
    value = _float(text)
    return value if value is not None and math.isfinite(value) else None


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:3 * _SHOWN])
    return shown + (f" ... ({len(names)} in all)" if len(names) > 3 * _SHOWN else "")
