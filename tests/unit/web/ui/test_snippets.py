from __future__ import annotations

import pytest

from apikm.config import ConfigError, Settings, load_settings
from apikm.web.ui.snippets import snippets, with_query_param

KEY = "apikm_AbCd1234" + "x" * 34


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def by_id(values: Settings) -> dict[str, str]:
    return {s.id: s.code for s in snippets(KEY, values)}


@pytest.mark.parametrize(("url", "expected"), [
    ("https://maps.example.org/wms", "https://maps.example.org/wms?apikey=K"),
    ("https://maps.example.org/wms?service=WMS",
     "https://maps.example.org/wms?service=WMS&apikey=K"),
    ("https://maps.example.org/wms?", "https://maps.example.org/wms?apikey=K"),
    ("https://x.org/t/{z}/{x}/{y}.png#layer", "https://x.org/t/{z}/{x}/{y}.png?apikey=K#layer"),
])
def test_the_key_joins_a_query_with_the_right_separator(url: str, expected: str) -> None:
    assert with_query_param(url, "apikey", "K") == expected


def test_snippets_name_the_configured_gateways_not_an_example_domain() -> None:
    code = by_id(settings(gateway_urls=["https://maps.example.net/wms?service=WMS",
                                        "https://data.example.net"]))
    assert "data.example.org" not in "".join(code.values())
    assert code["snippet-curl"] == \
        f'curl -H "X-API-Key: {KEY}" "https://maps.example.net/wms?service=WMS"'
    url = code["snippet-url"]
    assert f"https://maps.example.net/wms?service=WMS&apikey={KEY}" in url
    assert f"https://data.example.net?apikey={KEY}" in url
    assert "?service=WMS?apikey" not in url
    assert "GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR" in url


def test_without_gateway_urls_the_public_url_is_used() -> None:
    code = by_id(settings(public_url="https://apikm.example.net"))
    assert f"/vsicurl/https://apikm.example.net/path/to/raster.tif?apikey={KEY}" in \
        code["snippet-url"]
    assert "https://apikm.example.net/v1/verify" in code["snippet-check"]


def test_the_python_snippet_says_how_to_install_the_client() -> None:
    python = by_id(settings())["snippet-python"]
    assert python.startswith("# pip install ")
    assert "from apikm.client import APIKeyAuth" in python


def test_gateway_urls_are_read_as_a_list_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKM_GATEWAY_URLS",
                       "https://a.example.net/wms?x=1, https://b.example.net")
    assert load_settings().gateway_urls == ["https://a.example.net/wms?x=1",
                                            "https://b.example.net"]
    monkeypatch.setenv("APIKM_GATEWAY_URLS", "maps.example.net")
    with pytest.raises(ConfigError, match="APIKM_GATEWAY_URLS"):
        load_settings()
