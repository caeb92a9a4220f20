"""Reading header-first CSV files row by row, keeping every value a string and malformed rows aside."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from landmark.data.atomic import atomic_path
from landmark.data.groundtruth import DatasetFormatError


@dataclass
class CsvTable:
    """A CSV file split into well-formed rows (as columns) and rows with the wrong number of fields.

    Attributes:
        path: the file.
        header: column names from the first row.
        columns: column name -> values of the well-formed rows (whitespace-stripped strings).
        lines: line number (1-based, header = 1) of each well-formed row.
        malformed: (line number, fields) of each row whose field count differs from the header's.
    """

    path: Path
    header: tuple[str, ...]
    columns: dict[str, list[str]]
    lines: list[int] = field(default_factory=list)
    malformed: list[tuple[int, list[str]]] = field(default_factory=list)


def read_csv_table(path: str | Path, required: Sequence[str]) -> CsvTable:
    """Read a CSV file with a header, keeping every value a string (so "0123" stays "0123").

    Blank lines are skipped; rows with too few or too many fields are returned in ``malformed``.
    Undecodable bytes are replaced (U+FFFD): the affected ids become unsafe rather than the file unreadable.

    Raises:
        DatasetFormatError: an empty file, or a header missing ``required`` columns (names the file and them).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as stream:
        reader = csv.reader(stream)
        header_row = next((row for row in reader if row), None)
        if header_row is None:
            raise DatasetFormatError(f"{path}: empty file, expected a header with columns {list(required)}")
        header = tuple(name.strip() for name in header_row)
        missing = [name for name in required if name not in header]
        if missing:
            raise DatasetFormatError(
                f"{path}: missing required columns {missing}; the header has {list(header)}"
            )
        table = CsvTable(path=path, header=header, columns={name: [] for name in header})
        values = [table.columns[name] for name in header]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                table.malformed.append((reader.line_num, row))
                continue
            table.lines.append(reader.line_num)
            for column, value in zip(values, row, strict=True):
                column.append(value.strip())
    return table


def write_csv_rows(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Write a header and rows as UTF-8 CSV (minimal quoting, "\\n" line ends) atomically; returns path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path
