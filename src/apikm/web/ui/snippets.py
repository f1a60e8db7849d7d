"""The ready-to-paste snippets of the show-once page, for the gateway URLs users should see
(``APIKM_GATEWAY_URLS``): curl, a verification, GDAL and QGIS (key in the URL), Python, .env.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from apikm.config import Settings

# The auth class of apikm.client that reads APIKM_API_KEY, shown in the Python snippet.
PYTHON_AUTH = "APIKeyAuth"


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    help: str
    code: str


def with_query_param(url: str, name: str, value: str) -> str:
    """``url`` plus ``name=value``: after ``?``, or after ``&`` if it has a query already
    (a WMS URL such as ``...?service=WMS``), before any ``#fragment``."""
    base, hash_, fragment = url.partition("#")
    query = urlsplit(base).query
    separator = "&" if query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}{name}={value}{hash_}{fragment}"


def _file_url(url: str) -> str:
    """A raster under a gateway URL, for the GDAL line (a URL with a query is used as is)."""
    if urlsplit(url).query:
        return url
    return url.rstrip("/") + "/path/to/raster.tif"


def snippets(secret: str, settings: Settings) -> list[Snippet]:
    gateways = settings.effective_gateway_urls
    first = gateways[0]
    header = settings.auth_header[0]
    param = settings.auth_query_param
    qgis = "\n".join(f"#   {with_query_param(url, param, secret)}" for url in gateways)
    check = shlex.quote('{"key": "' + secret + '"}')
    return [
        Snippet("snippet-curl", "curl (header)",
                f"Send the key in the {header} header to a service behind apikm.",
                f'curl -H "{header}: {secret}" "{first}"'),
        Snippet("snippet-check", "Check the key",
                "Ask apikm whether the key is valid and what it grants.",
                f"curl -s {settings.base_url}/v1/verify -H 'Content-Type: application/json' "
                f"-d {check}"),
        Snippet("snippet-url", "GDAL, QGIS (URL)",
                f"For tools that only take a URL, add the key as the {param} query parameter. "
                "GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR saves dozens of requests per file.",
                "GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR gdalinfo "
                f"\"/vsicurl/{with_query_param(_file_url(first), param, secret)}\"\n"
                f"# QGIS: the layer's URL (WMS, WFS, XYZ, COG) with the key:\n{qgis}"),
        Snippet("snippet-python", "Python",
                "apikm.client reads the key from APIKM_API_KEY, so notebooks can be shared "
                "without it. It is part of the apikm package, which is not on PyPI: install "
                "it from the apikm source your organisation runs (it needs only httpx).",
                "# pip install ./apikm   (a clone of apikm; or pip install \"apikm @ git+<its "
                "repository URL>\")\n"
                f"import httpx\nfrom apikm.client import {PYTHON_AUTH}\n\n"
                f"# export APIKM_API_KEY={secret}\n"
                f"response = httpx.get(\"{first}\", auth={PYTHON_AUTH}())"),
        Snippet("snippet-env", ".env file",
                "Keep the key out of your code: put it in a .env file that is not committed.",
                f"APIKM_API_KEY={secret}"),
    ]
