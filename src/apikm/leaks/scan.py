"""Finding apikm keys in free text by their shape (the same pattern the secret scanner
rules in ``deploy/secret-scanning/`` use); whether each is real is the handler's job.

Files are read in pieces of at most ``PIECE_CHARS`` characters, so one without line breaks
(a binary dump, a minified bundle) costs bounded memory: a line longer than that is scanned
piece by piece, each piece carrying the unsettled end of the one before (a key's length and
one character of context, so no key is split, missed, found twice or given a false word
boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from apikm.keys.format import BODY_LENGTH, key_pattern

PIECE_CHARS = 1024 * 1024


@dataclass
class Found:
    """A key-shaped string and the lines it is on."""

    token: str = field(repr=False)
    lines: list[int] = field(default_factory=list)


def find_keys(lines: Iterable[str], prefix: str,
              progress: Callable[[int], None] = lambda _n: None) -> list[Found]:
    """Every distinct key-shaped string in ``lines``, in order of first appearance;
    ``progress`` is told the characters read after each line."""
    return _collect(_matches(((line, True) for line in lines), prefix, progress))


def find_keys_in(handle: TextIO, prefix: str, progress: Callable[[int], None] = lambda _n: None,
                 piece_chars: int = PIECE_CHARS) -> list[Found]:
    """``find_keys`` over a file, read in pieces of at most ``piece_chars`` characters."""
    return _collect(_matches(_pieces(handle, piece_chars), prefix, progress))


def _collect(matches: Iterator[tuple[int, str]]) -> list[Found]:
    found: dict[str, Found] = {}
    for number, token in matches:
        found.setdefault(token, Found(token)).lines.append(number)
    return list(found.values())


def _pieces(handle: TextIO, size: int) -> Iterator[tuple[str, bool]]:
    """(text, whether it ends its line)."""
    while piece := handle.readline(size):
        yield piece, piece.endswith("\n")


def _matches(pieces: Iterable[tuple[str, bool]], prefix: str,
             progress: Callable[[int], None]) -> Iterator[tuple[int, str]]:
    pattern = key_pattern(prefix)
    marker = prefix + "_"
    keep = len(marker) + BODY_LENGTH + 1  # longer than a key: a match before it is whole
    number, carried, skip = 1, "", 0
    for piece, ends_line in pieces:
        progress(len(piece))
        text = carried + piece
        # Matches starting before ``settled`` are followed by a real character (or the
        # line's end), so their closing word boundary is real: they are final.
        settled = len(text) if ends_line else len(text) - keep
        if marker in text:  # a substring test skips most lines cheaply
            for match in pattern.finditer(text, skip):  # \b at ``skip`` sees the char before
                if match.start() < settled:
                    yield number, match.group(0)
        if ends_line:
            number, carried, skip = number + 1, "", 0
        else:  # the line goes on: carry what is not settled, and one character before it
            pending = max(settled, skip)
            start = max(pending - 1, 0)
            carried, skip = text[start:], pending - start
    if marker in carried:  # the last line, without a line break
        for match in pattern.finditer(carried, skip):
            yield number, match.group(0)
