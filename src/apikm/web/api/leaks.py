"""``POST /v1/leaks``: leaked-key reports.

Two kinds of reporter, told apart by their headers before the body is read:

- GitHub's secret scanning partner program: ``Github-Public-Key-Identifier`` and
  ``Github-Public-Key-Signature`` (ECDSA P-256, SHA-256, DER, base64, over the raw body),
  checked against ``APIKM_LEAK_REPORT_KEYS``;
- an organisation's own scanners: ``Authorization: Bearer <Keycloak access token>`` of a
  holder of the admin role.

Anything else, an unknown key identifier or a signature header that cannot hold a P-256
signature is refused with 401 before the body is read, so anonymous callers cost
nothing (the gateway's failure limiter is not involved: it guards key guessing, and a
reporter may well send hundreds of unknown keys).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse

from apikm.config import Settings
from apikm.identity.principal import Principal
from apikm.keys.service import Actor
from apikm.leaks.handler import LeakHandler
from apikm.leaks.reports import (
    TRUE_POSITIVES,
    Outcome,
    ReportError,
    answer,
    parse_report,
)
from apikm.leaks.signatures import PublicKeys, decode_signature, load_public_keys
from apikm.web.api.deps import get_ctx
from apikm.web.api.schemas import ERROR_RESPONSES
from apikm.web.errors import ApiError

log = structlog.get_logger(__name__)

PATH = "/v1/leaks"
GITHUB_REPORTER = "github secret scanning"
KEY_ID_HEADER = "github-public-key-identifier"
SIGNATURE_HEADER = "github-public-key-signature"

router = APIRouter(tags=["leaks"])

_ITEM = {
    "type": "object", "required": ["token"],
    "properties": {
        "token": {"type": "string", "minLength": 1, "maxLength": 512,
                  "description": "the leaked text"},
        "type": {"type": "string", "description": "the reporter's name for the token type, "
                 "echoed as token_type (kept to 200 characters)"},
        "url": {"type": "string", "description": "where it was found (kept to 2048 "
                "characters)"},
        "source": {"type": "string", "description": "e.g. content, commit (kept to 100 "
                   "characters)"},
    },
}
_REQUEST = {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "items": _ITEM, "maxItems": 10_000}}}}
_LABEL = {
    "type": "object", "required": ["token_hash", "token_type", "label"],
    "properties": {
        "token_hash": {"type": "string", "description": "hex SHA-256 of the token"},
        "token_type": {"type": "string"},
        "label": {"type": "string", "enum": ["true_positive", "false_positive"]},
        "outcome": {"type": "string", "enum": [o.value for o in Outcome],
                    "description": "admins only: what apikm did"},
        "key_id": {"type": ["string", "null"], "description": "admins only: the key"},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"description": "one entry per reported token, in order",
          "content": {"application/json": {"schema": {"type": "array", "items": _LABEL}}}},
    401: {**ERROR_RESPONSES[401], "description": "no valid GitHub signature or access token"},
}


def install(app: FastAPI, settings: Settings) -> None:
    """The route, and GitHub's public keys read once (APIKM_LEAK_REPORT_KEYS)."""
    app.state.leak_keys = load_public_keys(settings.leak_report_keys)
    app.include_router(router)


@router.post(PATH, summary="Report leaked keys", response_class=JSONResponse,
             responses=_RESPONSES, openapi_extra={"requestBody": _REQUEST})
async def report_leaks(request: Request) -> JSONResponse:
    """GitHub's secret scanning partner format: each apikm key found is revoked (reason
    `leaked`), its owner and the admins are told; the answer labels each token
    `true_positive` (a key of this apikm) or `false_positive`. Signed by GitHub
    (`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`) or sent by an admin
    (`Authorization: Bearer`), who also gets `outcome` and `key_id` per token."""
    ctx = get_ctx(request)
    client_ip = ctx.addresses.resolve(request.scope)
    headers = request.headers
    if KEY_ID_HEADER in headers or SIGNATURE_HEADER in headers:
        identifier = headers.get(KEY_ID_HEADER, "")
        keys: PublicKeys = request.app.state.leak_keys
        if not identifier or not keys.knows(identifier):
            raise ApiError(401, "invalid_signature", "unknown Github-Public-Key-Identifier")
        if decode_signature(headers.get(SIGNATURE_HEADER, "")) is None:
            raise ApiError(401, "invalid_signature", "Github-Public-Key-Signature is not a "
                           "base64 DER ECDSA signature")
        body = await request.body()
        if not keys.verify(identifier, headers.get(SIGNATURE_HEADER, ""), body):
            raise ApiError(401, "invalid_signature", "the signature does not match the body")
        actor = Actor(f"github:{identifier}"[:255], GITHUB_REPORTER, client_ip)
        reporter, detailed = GITHUB_REPORTER, False
    else:
        admin = await _admin(request, client_ip)
        body = await request.body()
        actor, reporter, detailed = Actor.of(admin), f"admin {admin.username}", True
    try:
        items = parse_report(body)
    except ReportError as exc:
        extra: dict[str, Any] = {"details": exc.details} if exc.details else {}
        raise ApiError(exc.status, exc.error, exc.message, **extra) from None
    handler = LeakHandler(ctx.engine, ctx.verifier.peppers, ctx.settings.key_prefix,
                          ctx.keys, revoke_retired=ctx.settings.revoke_on_secret_reuse)
    results = await handler.report(items, actor, reporter)
    log.info("leak report", reporter=reporter, tokens=len(items),
             true_positives=sum(r.outcome in TRUE_POSITIVES for r in results),
             revoked=sum(r.outcome is Outcome.REVOKED for r in results))
    return JSONResponse([answer(item, result.outcome, detailed,
                                result.key.id if result.key else None)
                         for item, result in zip(items, results, strict=True)])


async def _admin(request: Request, client_ip: str | None) -> Principal:
    ctx = get_ctx(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "sign the report as GitHub does "
                       "(Github-Public-Key-Identifier, Github-Public-Key-Signature) or send "
                       "an admin's Keycloak access token (Authorization: Bearer ...)",
                       headers={"WWW-Authenticate": 'Bearer realm="apikm"'})
    principal = await ctx.tokens.validate(token.strip(), client_ip)
    role = ctx.settings.admin_role
    if not principal.has_role(role):
        raise ApiError(403, "forbidden", f"reporting leaks needs the Keycloak role '{role}' "
                       "or GitHub's signature")
    return principal
