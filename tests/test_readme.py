"""The README documents every column of the files the suite writes, from their one definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keepalive_lab.schema import BY_NAME_COLUMNS, SOCKETS_COLUMNS, SUMMARY_COLUMNS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_in_tables() -> set[str]:
    names = set()
    for line in README.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([a-z_0-9]+)`", first_cell))
    return names


@pytest.mark.parametrize("column", [*SOCKETS_COLUMNS, *SUMMARY_COLUMNS, *BY_NAME_COLUMNS])
def test_every_column_is_in_a_readme_table(column):
    assert column in documented_in_tables(), f"README.md has no table row for column {column!r}"
