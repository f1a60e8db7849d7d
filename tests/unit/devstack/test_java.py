"""Java discovery logic, with fake `java` scripts instead of real runtimes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from apikm.devstack.java import JavaNotFoundError, find_java_home, parse_java_major


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21.0.8" 2025-07-15 LTS\n', 21),
        ('openjdk version "21" 2023-09-19\n', 21),
        ('openjdk version "22-ea" 2024-03-19\n', 22),
        ('java version "1.8.0_292"\nJava(TM) SE Runtime Environment', 8),
        ('Picked up JAVA_TOOL_OPTIONS: -Xmx1g\nopenjdk version "25.0.1" 2025-10-21\n', 25),
        ("bash: java: command not found", None),
        ('openjdk version "weird"', None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def _fake_home(root: Path, version: str) -> Path:
    """A directory that looks like a JAVA_HOME whose java reports ``version``."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return root


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real Java visible: empty cache, PATH without java, no JAVA_HOME."""
    monkeypatch.setenv("APIKM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return tmp_path


def test_java_home_env_is_used_when_recent(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _fake_home(isolated / "jdk21", "21.0.2")
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert find_java_home(install=False) == home


def test_too_old_java_is_skipped_for_cached_jdk(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_fake_home(isolated / "jdk17", "17.0.15")))
    cached = _fake_home(isolated / "cache" / "jdk", "21.0.8")
    assert find_java_home(install=False) == cached


def test_nothing_usable_without_install_raises(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_fake_home(isolated / "jdk17", "17.0.15")))
    with pytest.raises(JavaNotFoundError):
        find_java_home(install=False)
