"""What the CLI prints to an admin's terminal."""

from __future__ import annotations

import pytest

from apikm.cli import shown


@pytest.mark.parametrize(("text", "printed"), [
    ("gdal on my laptop", "gdal on my laptop"),
    ("clé 🔑 日本", "clé 🔑 日本"),
    ("\x1b[2Jwiped", "\\x1b[2Jwiped"),
    ("two\nlines\r", "two\\nlines\\r"),
    ("rtl\u202eexe.txt", "rtl\\u202eexe.txt"),
    ("bell\x07\x00", "bell\\x07\\x00"),
])
def test_non_printable_characters_are_escaped(text: str, printed: str) -> None:
    assert shown(text) == printed
