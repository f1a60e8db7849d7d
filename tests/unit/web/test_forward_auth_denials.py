"""Refusals of ``/v1/auth`` say why, in headers a gateway can pass on, without a secret."""

from __future__ import annotations

import json

from apikm.config import Settings
from apikm.verify.codes import Code
from apikm.verify.verifier import Verification
from apikm.web.forward_auth import MAX_DENIALS, ForwardAuthRules


def rules() -> ForwardAuthRules:
    return ForwardAuthRules(Settings(_env_file=None))  # type: ignore[call-arg]


def as_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in headers}


def test_every_refusal_names_its_code_and_reason() -> None:
    made = rules()
    for code in Code:
        if code is Code.VALID:
            continue
        status, headers, body = made.refusal(Verification(code))
        seen = as_dict(headers)
        assert seen["x-auth-error"] == code.value
        assert seen["x-auth-error-description"]
        answer = json.loads(body)
        assert answer["error"] == code.value and answer["message"]
        assert seen["content-type"] == "application/json"
        if status == 401:
            challenge = seen["www-authenticate"]
            assert challenge.startswith('Bearer realm="apikm", error="invalid_token", '
                                        'error_description="')
            assert challenge.endswith(', Basic realm="apikm", charset="UTF-8"')
        if status == 429:
            assert seen["retry-after"] == "60"


def test_missing_roles_are_named() -> None:
    result = Verification(Code.INSUFFICIENT_ROLES, missing_roles=("editor", "geoserver:write"))
    status, headers, body = rules().refusal(result)
    assert status == 403
    why = "API key lacks the required roles: editor, geoserver:write"
    assert as_dict(headers)["x-auth-error-description"] == why
    assert json.loads(body) == {"error": "INSUFFICIENT_ROLES", "message": why,
                                "missing_roles": ["editor", "geoserver:write"]}


def test_a_rotated_secret_says_so_and_admin_reasons_stay_out() -> None:
    made = rules()
    _, headers, _ = made.refusal(Verification(Code.REVOKED, reason="rotated"))
    assert "rotated" in as_dict(headers)["x-auth-error-description"]
    _, headers, body = made.refusal(Verification(Code.REVOKED, reason="leaked on a wiki"))
    assert "wiki" not in as_dict(headers)["x-auth-error-description"]
    assert "wiki" not in body.decode()


def test_no_key_at_all_gets_the_bare_challenge() -> None:
    headers, body = rules().denial(401, "missing_key")
    seen = as_dict(headers)
    assert seen["www-authenticate"] == 'Bearer realm="apikm", Basic realm="apikm", charset="UTF-8"'
    assert seen["x-auth-error"] == "missing_key"
    assert json.loads(body)["message"] == "an API key is required"


def test_descriptions_are_safe_in_quotes_and_latin1() -> None:
    result = Verification(Code.INSUFFICIENT_ROLES, missing_roles=('a"b', "c\\d", "é"))
    _, headers, body = rules().refusal(result)
    description = as_dict(headers)["x-auth-error-description"]
    assert '"' not in description and "\\" not in description
    description.encode("ascii")
    # What nginx builds from it is JSON.
    assert json.loads(f'{{"message": "{description}"}}')["message"] == description
    assert json.loads(body)["missing_roles"] == ['a"b', "c\\d", "é"]


def test_answers_are_built_once_and_the_table_is_bounded() -> None:
    made = rules()
    first = made.refusal(Verification(Code.EXPIRED))
    assert made.refusal(Verification(Code.EXPIRED))[1] is first[1]  # no allocation per request
    for n in range(MAX_DENIALS + 10):
        made.refusal(Verification(Code.INSUFFICIENT_ROLES, missing_roles=(f"r{n}",)))
    assert len(made._denials) == MAX_DENIALS
