"""deploy/nginx/apikm-microcache.conf is apikm.conf plus the cache, nothing else: a fix to
apikm.conf (say, how apikey= is stripped) cannot be forgotten in the cached variant."""

from __future__ import annotations

import re
from pathlib import Path

NGINX = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
CACHED = (NGINX / "apikm-microcache.conf").read_text()


def without_cache(text: str) -> str:
    _, _, rest = text.partition("inactive=10s use_temp_path=off;\n\n")
    assert rest, "the header ends with the proxy_cache_path directive"
    return re.sub(r"\n *# micro-cache: begin.*?# micro-cache: end\n", "\n", rest, flags=re.S)


def test_the_cached_variant_is_apikm_conf_plus_the_cache() -> None:
    assert without_cache(CACHED) == (NGINX / "apikm.conf").read_text()


def test_the_cache_key_holds_every_place_a_key_can_be() -> None:
    key = re.search(r'proxy_cache_key "([^"]+)"', CACHED)
    assert key is not None
    parts = key.group(1).split("|")
    # $request_uri, not a parsed ?apikey=: any spelling of the parameter is in the key.
    assert parts == ["$http_x_api_key", "$http_authorization", "$request_uri", "$remote_addr",
                     "$apikm_query", "$apikm_cache_slot"]
    # apikm is sent exactly the header values the entry is cached under.
    assert "proxy_set_header X-API-Key $http_x_api_key;" in CACHED
    assert "proxy_set_header Authorization $http_authorization;" in CACHED
    assert re.search(r"proxy_cache_valid 200 1s;", CACHED)
    assert not re.search(r"proxy_cache_valid (?!200 1s;)", CACHED)  # refusals are never cached
