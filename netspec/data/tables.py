"""CSV tables as datasets: numeric feature columns and one label column, read without pandas.

    sepal_length,sepal_width,petal_length,petal_width,species
    5.1,3.5,1.4,0.2,setosa

- The first line is the header. The label column is `label_column`, else the column named
  `label`, else the last one; every other column is a feature.
- Labels are any text. The classes are their sorted values (numerically when every label is a
  number: 2 before 10), or `classes` in its order; the mapping travels with the run.
- Every feature cell must be a finite number: an empty cell, a text cell or nan/inf is an
  error naming its line and column, all of them at once (up to MAX_LISTED).
- A test table (`LoadOptions.test`, or test.csv beside train.csv in a directory) must have the
  same header, and labels that training has; without one, a seeded stratified fraction of the
  rows is held out.

The csv module reads the header and the labels; numpy's C parser (`np.loadtxt`) the features.
Only when that fails does a slower pass find every bad cell.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from netspec.data.dataset import Dataset, Split, stratified_split
from netspec.data.options import LoadOptions
from netspec.errors import DataError, Problem, did_you_mean

MAX_LISTED = 20


def load_table(path: Path, options: LoadOptions) -> Dataset:
    """A CSV file, or a directory holding train.csv and test.csv."""
    test_path = Path(options.test) if options.test else None
    if path.is_dir():
        train_path, test_path = path / "train.csv", path / "test.csv"
    else:
        train_path = path
    header, labels, x, lines = read_csv(train_path, options.label_column)
    label_col = _label_column(header, options.label_column, train_path)
    features = tuple(h for h in header if h != label_col)
    names = class_names(labels, lines, options.classes, train_path, label_col)
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[v] for v in labels], np.int64)
    held_out = None
    if test_path is not None:
        test_header, test_labels, x_test, test_lines = read_csv(test_path, label_col)
        if test_header != header:
            raise DataError([Problem(f"the header is {','.join(test_header)}, but the training "
                                     f"table's is {','.join(header)}: both must have the same "
                                     "columns in the same order", file=str(test_path), line=1)])
        unseen = _unseen(test_labels, test_lines, index, test_path, label_col)
        if unseen:
            raise DataError(unseen)
        y_test = np.array([index[v] for v in test_labels], np.int64)
        train, test = Split(x, y), Split(x_test, y_test)
    else:
        kept, held = stratified_split(y, round(options.test_fraction * len(y)),
                                      options.split_seed)
        train, test = Split(x[kept], y[kept]), Split(x[held], y[held])
        held_out = {"fraction": options.test_fraction, "seed": options.split_seed,
                    "count": len(held)}
    return Dataset(name=str(path), train=train, test=test, num_classes=len(names),
                   path=path, kind="csv", class_names=names, held_out=held_out, ordered=True,
                   split_seed=options.split_seed, columns=features, label_column=label_col)


def _label_column(header: list, wanted: str | None, path: Path) -> str:
    if wanted is not None:
        if wanted not in header:
            raise DataError([Problem(f"no column '{wanted}' (data.label_column)"
                                     f"{did_you_mean(wanted, header)}; the columns are "
                                     f"{', '.join(header)}", file=str(path), line=1)])
        return wanted
    return "label" if "label" in header else header[-1]


def read_header(path: Path) -> list[str]:
    """The column names of a CSV file (its first line)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f), None)
    except UnicodeDecodeError as e:
        raise DataError([Problem(f"not UTF-8 text ({e.reason} at byte {e.start})",
                                 file=str(path))]) from None
    except OSError as e:
        raise DataError([Problem(f"cannot read: {e.strerror or e}", file=str(path))]) from None
    if not row:
        raise DataError([Problem("the file is empty: a table needs a header line naming its "
                                 "columns, then one line per sample", file=str(path))])
    header = [h.strip() for h in row]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or not all(header) or len(header) < 2:
        why = (f"column names {', '.join(dupes)} appear twice" if dupes else
               "a column has no name" if not all(header) else
               "it has one column; a table needs feature columns and a label column")
        raise DataError([Problem(f"bad header line: {why}", file=str(path), line=1)])
    return header


def read_csv(path: Path, label_column: str | None = None) -> tuple[list, list, np.ndarray,
                                                                  list]:
    """(header, label per row (text), features float64 (N, D), line of each row) of a CSV
    file; DataError naming every bad line and column."""
    header = read_header(path)
    label_col = _label_column(header, label_column, path)
    li = header.index(label_col)
    labels, lines, problems = [], [], []
    for line, row in _rows(path):
        if len(row) != len(header):
            problems.append(Problem(f"{len(row)} values, but the header names "
                                    f"{len(header)} columns", file=str(path), line=line))
            continue
        label = row[li].strip()
        if not label:
            problems.append(Problem(f"column '{label_col}' (the label): the value is "
                                    "missing", file=str(path), line=line))
        labels.append(label)
        lines.append(line)
    if not labels and not problems:
        raise DataError([Problem("no rows after the header", file=str(path))])
    if problems:
        raise DataError(_capped(problems))
    cols = [i for i in range(len(header)) if i != li]
    x = numbers(path, header, cols)
    if len(x) != len(labels):
        raise DataError([Problem("the rows could not be read consistently (a quoted line "
                                 "break?)", file=str(path))])
    return header, labels, x, lines


def numbers(path: Path, header: list, cols: list[int]) -> np.ndarray:
    """float64 (N, len(cols)): columns `cols` of every data row; DataError naming each cell
    that is not a finite number."""
    try:
        x = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, dtype=np.float64,
                       ndmin=2, comments=None, quotechar='"', encoding="utf-8-sig")
        if not np.isfinite(x).all():
            raise ValueError("not finite")
    except ValueError:
        raise DataError(_capped(_bad_cells(path, header, set(cols)))) from None
    return x


def read_features(path: Path, columns: list[str]) -> tuple[np.ndarray, list[int]]:
    """(float64 (N, len(columns)) of the named columns in that order, line of each row): the
    rows of a table to predict on; other columns (a label) are ignored."""
    header = read_header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError([Problem(f"no column {', '.join(map(repr, missing))}; the network was "
                                 f"trained on the columns {', '.join(columns)}",
                                 file=str(path), line=1)])
    lines = []
    for line, row in _rows(path):
        if len(row) != len(header):
            raise DataError([Problem(f"{len(row)} values, but the header names "
                                     f"{len(header)} columns", file=str(path), line=line)])
        lines.append(line)
    if not lines:
        raise DataError([Problem("no rows after the header", file=str(path))])
    x = numbers(path, header, [header.index(c) for c in columns])
    return x, lines


def _bad_cells(path: Path, header: list, cols: set) -> list[Problem]:
    """Every feature cell that is not a finite number, located (the slow pass)."""
    problems = []
    for line, row in _rows(path):
        for i, cell in enumerate(row):
            if i not in cols:
                continue
            text = cell.strip()
            try:
                ok = math.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                what = ("the value is missing" if not text else
                        f"{text!r} is not a finite number")
                problems.append(Problem(f"column '{header[i]}': {what}; every feature must "
                                        "be a number", file=str(path), line=line))
    return problems or [Problem("the numeric columns could not be read", file=str(path))]


def _rows(path: Path):
    """(line number, cells) of every data row of a CSV file: after the header, blank lines
    skipped."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                yield reader.line_num, row


def _capped(problems: list) -> list:
    more = len(problems) - MAX_LISTED
    return problems[:MAX_LISTED] + ([Problem(f"... and {more} more")] if more > 0 else [])


def class_names(labels: list, lines: list, fixed, path: Path, column: str) -> tuple[str, ...]:
    """The classes in label order: `fixed`, or the sorted distinct labels (numerically if all
    are numbers)."""
    if fixed is not None:
        index = {n: i for i, n in enumerate(fixed)}
        unknown = _unseen(labels, lines, index, path, column, what="data.classes")
        if unknown:
            raise DataError(unknown)
        return tuple(fixed)
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(sorted(distinct))


def _unseen(labels, lines, index, path, column, what="the training table") -> list[Problem]:
    """A problem per label value not in `index`, at the first line it is on."""
    problems, said = [], set()
    for line, value in zip(lines, labels):
        if value not in index and value not in said:
            said.add(value)
            problems.append(Problem(
                f"column '{column}': label {value!r} is not a class of {what} (classes: "
                f"{', '.join(index)}); a network cannot be tested on a class it was never "
                f"trained on", file=str(path), line=line))
    return _capped(problems)
