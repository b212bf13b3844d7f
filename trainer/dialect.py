"""How a station file is written: its delimiter and decimal mark, sniffed or given.

European exports are commonly `;`-separated with decimal commas; others use tabs or
`|`. The first lines decide: the delimiter is the candidate that splits every line
into the same number (more than one) of fields; the decimal mark is a comma when the
fields hold numbers like `12,5` and none like `12.5` (only when the delimiter is not
a comma itself).
"""
from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
SAMPLE_LINES = 50
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_DECIMAL_POINT = re.compile(r"^[+-]?\d+\.\d+$")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_NAMED = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|", "space": " "}


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    decimal: str = "."
    sniffed: bool = False  # True when either was sniffed and differs from the default

    def describe(self) -> str:
        shown = {"\t": "tab", " ": "space"}.get(self.delimiter, repr(self.delimiter))
        return f"read as {shown}-separated with decimal {'commas' if self.decimal == ',' else 'points'}"


def option_character(text: str | None, option: str) -> str | None:
    """A delimiter or decimal setting: one character, or a name such as tab."""
    if text is None:
        return None
    character = _NAMED.get(text.lower(), text)
    if len(character) != 1:
        raise DataError(f"{option} {text!r} is not one character (or tab, semicolon, comma, pipe, space)",
                        settings=(option,))
    return character


def decimal_mark(text: str | None, delimiter: str | None) -> str | None:
    """The --decimal setting: '.' or ',' (pandas reads any character, and a letter or the
    delimiter would turn every number into text), or None to sniff it."""
    mark = option_character(text, "decimal")
    if mark is not None and mark not in ".,":
        raise DataError(f"decimal {text!r} must be '.' or ','", settings=("decimal",))
    if mark is not None and mark == delimiter:
        raise DataError(f"decimal {text!r} is also the delimiter", settings=("decimal", "delimiter"))
    return mark


def sniff(path: Path, delimiter: str | None = None, decimal: str | None = None) -> Dialect:
    opener = _OPENERS.get(path.suffix.lower(), open)  # pandas reads compressed files by suffix too
    try:
        with opener(path, "rb") as handle:
            sample = handle.read(SAMPLE_BYTES)
    except (OSError, EOFError, lzma.LZMAError):
        return Dialect(delimiter or ",", decimal or ".")  # pandas' own error will name the problem
    lines = sample.decode("utf-8-sig", errors="replace").splitlines()
    if len(sample) == SAMPLE_BYTES:
        lines = lines[:-1]  # the last line may be cut short
    lines = [line for line in lines[:SAMPLE_LINES] if line.strip()]
    chosen = delimiter or _sniff_delimiter(lines)
    mark = decimal or _sniff_decimal(lines, chosen)
    return Dialect(chosen, mark, sniffed=(delimiter is None and chosen != ",") or (decimal is None and mark != "."))


def _fields(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return []


def _sniff_delimiter(lines: list[str]) -> str:
    best, best_count = ",", 1
    for candidate in DELIMITERS:
        counts = {len(_fields(line, candidate)) for line in lines}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = candidate, count
    return best


def _sniff_decimal(lines: list[str], delimiter: str) -> str:
    if delimiter == ",":
        return "."
    fields = [field.strip() for line in lines[1:] for field in _fields(line, delimiter)]
    commas = any(_DECIMAL_COMMA.match(field) for field in fields)
    points = any(_DECIMAL_POINT.match(field) for field in fields)
    return "," if commas and not points else "."
