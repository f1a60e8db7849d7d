"""The README's "Using a key" is scripts/using-a-key.sh, word for word, so the commands a
newcomer pastes are the ones tests/e2e/test_readme_key.py runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, f"no bash block under {heading!r}"
    return block.group(1)


def test_the_readme_quotes_the_script() -> None:
    script = (ROOT / "scripts" / "using-a-key.sh").read_text()
    header, _, body = script.partition("set -euo pipefail\n\n")
    assert header.startswith("#!/usr/bin/env bash\n") and body
    assert readme_block("Using a key") == body


def test_the_key_has_the_roles_the_nginx_example_requires() -> None:
    script = (ROOT / "scripts" / "using-a-key.sh").read_text()
    created = re.search(r'"roles": \[([^]]*)\]', script)
    assert created is not None
    granted = set(re.findall(r'"([^"]+)"', created.group(1)))
    nginx = (ROOT / "deploy" / "nginx" / "apikm.conf").read_text()
    queries = re.findall(r'set \$apikm_query "([^"]*)"', nginx)
    required = {part[5:] for query in queries for part in query.split("&")
                if part.startswith("role=")}
    assert required and required <= granted
