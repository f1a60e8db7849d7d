"""What key owners import in Python: auth for ``requests`` and ``httpx``.

The key comes from ``APIKM_API_KEY`` when none is passed, so a notebook can be shared
without the secret in it::

    import requests, httpx
    from apikm.client import APIKeyAuth, TokenExchangeAuth

    requests.get("https://maps.example.org/data/dem.tif", auth=APIKeyAuth())
    httpx.get("https://maps.example.org/data/dem.tif", auth=APIKeyAuth())

    # For services that want a standard bearer token: the key is traded for a short-lived
    # JWT at apikm's /oauth/token (APIKM_URL), refreshed shortly before it expires.
    auth = TokenExchangeAuth()
    httpx.get("https://stac.example.org/search", auth=auth)

``requests`` is not needed to import this module: ``APIKeyAuth`` and ``TokenExchangeAuth``
are ``httpx.Auth`` classes that are also callables of the kind ``requests`` takes as ``auth``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncGenerator, Generator, MutableMapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx

KEY_VARIABLE = "APIKM_API_KEY"
URL_VARIABLE = "APIKM_URL"
# Authorization, not X-API-Key: httpx and requests drop Authorization when a redirect leaves
# the origin (e.g. to a presigned storage URL), but carry any custom header along.
DEFAULT_HEADER = "Authorization"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
API_KEY_TOKEN_TYPE = "urn:apikm:params:oauth:token-type:api-key"  # noqa: S105 - a URN


class MissingKey(RuntimeError):
    """No key was given and ``APIKM_API_KEY`` is not set."""


class ExchangeFailed(RuntimeError):
    """apikm refused to exchange the key; ``error`` is the OAuth error code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"token exchange failed ({status} {error}): {description}")
        self.status = status
        self.error = error


class _HasHeaders(Protocol):
    headers: MutableMapping[str, str]


_Request = TypeVar("_Request", bound=_HasHeaders)


def _key_or_environment(key: str | None) -> str:
    key = key or os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        raise MissingKey(f"no API key: pass one or set {KEY_VARIABLE}")
    return key


class APIKeyAuth(httpx.Auth):
    """Sends the key on every request, as ``Authorization: Bearer <key>`` by default.

    ``header="X-API-Key"`` (or any other name) sends the bare key in that header instead;
    beware that clients forward custom headers on redirects to other hosts.
    """

    def __init__(self, key: str | None = None, header: str = DEFAULT_HEADER) -> None:
        self._header = header
        secret = _key_or_environment(key)
        self._value = f"Bearer {secret}" if header.lower() == "authorization" else secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._value
        yield request

    def __call__(self, request: _Request) -> _Request:
        """``requests`` calls its ``auth`` with the prepared request."""
        request.headers[self._header] = self._value
        return request

    def __repr__(self) -> str:  # the key must not reach logs or notebook output
        return f"APIKeyAuth(header={self._header!r})"


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # monotonic time after which a new token is fetched


class TokenExchangeAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <JWT>``, the key exchanged at apikm's ``/oauth/token``.

    The token is fetched on first use and again ``refresh_margin`` seconds before it expires
    (at the latest at 90% of its life); a 401 from the service triggers one fresh exchange
    and a retry.
    """

    def __init__(self, apikm_url: str | None = None, key: str | None = None, *,
                 audience: str | None = None, refresh_margin: float = 30.0,
                 timeout: float = 10.0) -> None:
        url = apikm_url or os.environ.get(URL_VARIABLE, "")
        if not url:
            raise ValueError(f"no apikm URL: pass apikm_url or set {URL_VARIABLE}")
        self._token_url = url.rstrip("/") + "/oauth/token"
        self._form = {"grant_type": TOKEN_EXCHANGE, "subject_token": _key_or_environment(key),
                      "subject_token_type": API_KEY_TOKEN_TYPE}
        if audience:
            self._form["audience"] = audience
        self._margin = refresh_margin
        self._timeout = timeout
        self._token: _Token | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    # --- httpx -----------------------------------------------------------------------------
    def sync_auth_flow(
            self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._bearer_sync()
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = self._bearer_sync(force=True)
            yield request

    async def async_auth_flow(
            self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = await self._bearer_async()
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = await self._bearer_async(force=True)
            yield request

    # --- requests --------------------------------------------------------------------------
    def __call__(self, request: _Request) -> _Request:
        request.headers["Authorization"] = self._bearer_sync()
        return request

    def __repr__(self) -> str:
        return f"TokenExchangeAuth(token_url={self._token_url!r})"

    # --- the exchange ----------------------------------------------------------------------
    def _fresh(self) -> str | None:
        token = self._token
        return token.value if token is not None and token.refresh_at > time.monotonic() else None

    def _bearer_sync(self, force: bool = False) -> str:
        with self._thread_lock:
            current = None if force else self._fresh()
            if current is None:
                response = httpx.post(self._token_url, data=self._form, timeout=self._timeout)
                current = self._remember(response)
            return current

    async def _bearer_async(self, force: bool = False) -> str:
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            current = None if force else self._fresh()
            if current is None:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.post(self._token_url, data=self._form)
                current = self._remember(response)
            return current

    def _remember(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            raise ExchangeFailed(response.status_code, str(body.get("error", "unknown")),
                                 str(body.get("error_description", response.text[:200])))
        lifetime = float(body.get("expires_in", 60))
        early = min(self._margin, lifetime * 0.9)  # a short token still gets some use
        value = f"Bearer {body['access_token']}"
        self._token = _Token(value, time.monotonic() + lifetime - early)
        return value
