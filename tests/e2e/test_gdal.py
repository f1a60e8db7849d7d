"""GDAL (Debian's gdal-bin) reads a GeoTIFF served behind nginx + apikm, the three ways a
GDAL user can present a key; a wrong key fails."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.gateway_fixtures import gateway_setting
from tests.support.gateway_checks import Setting
from tests.support.gateways import nginx_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setting() -> Iterator[Setting]:
    # GDAL connects from 127.0.0.1 only: room for the wrong-key runs' failures.
    with gateway_setting(nginx_gateway, failure_limit="100/minute") as prepared:
        yield prepared


def gdalinfo(url: str, **config: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ,
           # One file, no directory listing, no retries: every request is one apikm check.
           "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "0",
           "CPL_VSIL_CURL_CACHE_SIZE": "0", **config}
    return subprocess.run(["gdalinfo", "-json", f"/vsicurl/{url}"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_reads_the_raster(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["size"] == [64, 48]
    assert info["driverShortName"] == "GTiff"
    assert "4326" in info["coordinateSystem"]["wkt"]
    assert info["bands"][0]["type"] == "Byte"


def test_key_in_the_url(setting: Setting) -> None:
    url = f"{setting.gateway.url}/data/dem.tif?apikey={setting.alice_key}"
    assert_reads_the_raster(gdalinfo(url))


def test_key_in_a_header(setting: Setting) -> None:
    done = gdalinfo(f"{setting.gateway.url}/data/dem.tif",
                    GDAL_HTTP_HEADERS=f"X-API-Key: {setting.alice_key}")
    assert_reads_the_raster(done)


def test_key_as_basic_auth_password(setting: Setting) -> None:
    done = gdalinfo(f"{setting.gateway.url}/data/dem.tif",
                    GDAL_HTTP_USERPWD=f"gis:{setting.alice_key}", GDAL_HTTP_AUTH="BASIC")
    assert_reads_the_raster(done)


@pytest.mark.parametrize("how", ["url", "header", "basic"])
def test_wrong_key_fails(setting: Setting, how: str) -> None:
    wrong = "apikm_" + "Z" * 40
    base = f"{setting.gateway.url}/data/dem.tif"
    done = {
        "url": lambda: gdalinfo(f"{base}?apikey={wrong}"),
        "header": lambda: gdalinfo(base, GDAL_HTTP_HEADERS=f"X-API-Key: {wrong}"),
        "basic": lambda: gdalinfo(base, GDAL_HTTP_USERPWD=f"gis:{wrong}",
                                  GDAL_HTTP_AUTH="BASIC"),
    }[how]()
    assert done.returncode != 0
    assert "size" not in done.stdout
