"""Finding apikm keys in free text by their shape (the same pattern the secret scanner
rules in ``deploy/secret-scanning/`` use); whether each is real is the handler's job."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from apikm.keys.format import key_pattern


@dataclass
class Found:
    """A key-shaped string and the lines it is on."""

    token: str = field(repr=False)
    lines: list[int] = field(default_factory=list)


def find_keys(lines: Iterable[str], prefix: str,
              progress: Callable[[int], None] = lambda _n: None) -> list[Found]:
    """Every distinct key-shaped string in ``lines``, in order of first appearance;
    ``progress`` is told the characters read after each line."""
    found: dict[str, Found] = {}
    for number, token, size in _matches(lines, prefix):
        if token:
            found.setdefault(token, Found(token)).lines.append(number)
        progress(size)
    return list(found.values())


def _matches(lines: Iterable[str], prefix: str) -> Iterator[tuple[int, str, int]]:
    pattern = key_pattern(prefix)
    marker = prefix + "_"
    for number, line in enumerate(lines, start=1):
        if marker in line:  # a substring test skips most lines cheaply
            for match in pattern.finditer(line):
                yield number, match.group(0), 0
        yield number, "", len(line)
