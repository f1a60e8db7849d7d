"""deploy/secret-scanning/gitleaks.toml run by a real gitleaks (built from the Go module
proxy by scripts/gitleaks.sh) over generated keys amid near misses.

TruffleHog cannot be fetched through the Go module proxy (its module is not served there),
so its detector is checked in tests/unit/leaks/test_scan.py: the YAML parses, its regex is
the same pattern, and it finds exactly the keys in the same sample.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.leak_samples import sample

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "deploy" / "secret-scanning" / "gitleaks.toml"


@pytest.fixture(scope="module")
def gitleaks() -> str:
    built = subprocess.run([str(ROOT / "scripts" / "gitleaks.sh")], capture_output=True,
                           text=True, check=False)
    assert built.returncode == 0, f"scripts/gitleaks.sh could not provide gitleaks:\n" \
                                  f"{built.stderr}"
    return built.stdout.strip().splitlines()[-1]


def _scan(gitleaks: str, directory: Path) -> list[dict[str, object]]:
    report = directory.parent / f"{directory.name}-report.json"
    subprocess.run([gitleaks, "dir", str(directory), "--config", str(CONFIG), "--no-banner",
                    "--report-format", "json", "--report-path", str(report),
                    "--exit-code", "0", "--log-level", "error"], check=True, timeout=120)
    findings: list[dict[str, object]] = json.loads(report.read_text())
    return findings


def test_gitleaks_finds_exactly_the_generated_keys(gitleaks: str, tmp_path: Path) -> None:
    text, keys = sample(20)
    scanned = tmp_path / "repo"
    scanned.mkdir()
    (scanned / "settings.env").write_text(text)
    findings = _scan(gitleaks, scanned)
    assert sorted(str(f["Secret"]) for f in findings) == sorted(keys)
    assert {f["RuleID"] for f in findings} == {"apikm-api-key"}
    lines = text.splitlines()
    assert all(str(f["Secret"]) in lines[int(str(f["StartLine"])) - 1] for f in findings)


def test_gitleaks_reports_nothing_in_near_misses_alone(gitleaks: str, tmp_path: Path) -> None:
    text, _keys = sample(0)
    scanned = tmp_path / "clean"
    scanned.mkdir()
    (scanned / "notes.txt").write_text(text)
    assert _scan(gitleaks, scanned) == []
