"""README's "What happens when…" table says what ``apikm.notify.rules`` does: who is mailed
for each event, and which mails an owner cannot turn off."""

from __future__ import annotations

import re
from pathlib import Path

from apikm.notify import rules

README = Path(__file__).resolve().parents[3] / "README.md"


def table_rows() -> list[list[str]]:
    text = README.read_text()
    start = text.index("**What happens when…**")
    rows = []
    for line in text[start:].splitlines()[4:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # past the header and its rule


def test_every_event_is_in_the_table() -> None:
    named = {t for row in table_rows() for t in re.findall(r"`(key\.[a-z_]+)`", row[3])}
    assert named == set(rules.EVENT_TYPES)


def test_admins_and_always_columns_follow_the_rules() -> None:
    for owner, admins, types, off in ((r[1], r[2], r[3], r[4]) for r in table_rows()):
        event = re.findall(r"`(key\.[a-z_]+)`", types)[0]
        assert admins.startswith("yes") == rules.mail_admins(event), event
        topic = rules.TOPIC_OF[event]
        assert off.startswith("no") == (topic in rules.ALWAYS), event
        if not off.startswith("no"):
            assert f'"{topic}"' in off, event
        assert owner.startswith("yes"), event
