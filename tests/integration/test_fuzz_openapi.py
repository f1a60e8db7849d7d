"""The whole documented API, fuzzed by schemathesis against a running ``apikm serve``.

Every operation of ``/openapi.json`` gets requests generated from its schema, valid ones
(positive) and invalid ones (negative), sent with a real Keycloak access token of a user of
its own (an admin, so ``/v1/admin`` is reached too; its keys count against no other test's
quota). Two properties must hold for every answer:

- no status of 500 or more;
- the answer conforms to the status code's documented schema.

It runs once per database (SQLite, PostgreSQL). The CI budget is small:
``APIKM_FUZZ_EXAMPLES`` examples per operation and round (default 25: 900 requests, about
20 s per database); rounds are valid data, invalid data, and for operations on one key also
an existing key of the user. For a longer hunt, run on demand, e.g.::

    APIKM_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/integration/test_fuzz_openapi.py -s

``APIKM_FUZZ_CHECKS`` (comma-separated schemathesis check names) widens or narrows the
checks; by default: not_a_server_error, response_schema_conformance,
status_code_conformance, content_type_conformance. Failures list each operation with the
reproducing request (as curl, token filtered) and what was wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction

from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import ApikmServer
from tests.support.keycloak_tokens import password_grant
from tests.support.keycloak_users import throwaway_user

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("APIKM_FUZZ_EXAMPLES", "25"))
CHECKS: list[CheckFunction] = [getattr(schemathesis.checks, name) for name in os.environ.get(
    "APIKM_FUZZ_CHECKS", "not_a_server_error,response_schema_conformance,"
    "status_code_conformance,content_type_conformance").split(",")]


@pytest.fixture(scope="module")
def fuzz_token(keycloak: StackInfo) -> Iterator[Callable[[], str]]:
    """A fresh access token of a throwaway admin user (tokens outlive no long run)."""
    with throwaway_user(keycloak.base_url, ("analyst", "apikm-admin")) as user:
        yield lambda: str(password_grant(keycloak.issuer, user.username,
                                         user.password)["access_token"])


def test_documented_api_survives_fuzzing(apikm: ApikmServer,
                                         fuzz_token: Callable[[], str]) -> None:
    schema = schemathesis.openapi.from_url(f"{apikm.url}/openapi.json")
    session = requests.Session()
    failures: list[str] = []
    examples = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    # Random ids only meet 404: operations on one key also get one that exists, made before
    # fuzzing key creation can reach the user's key limit.
    existing = {op.label: _new_key(apikm, fuzz_token()) for op in operations
                if "{key_id}" in op.path}
    for operation in operations:
        rounds: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if operation.label in existing:
            rounds.append((GenerationMode.POSITIVE, {"key_id": existing[operation.label]}))
        for mode, path_parameters in rounds:
            strategy = operation.as_strategy(generation_mode=mode,
                                             path_parameters=path_parameters)
            try:
                examples += _fuzz(strategy, apikm.url, session,
                                  {"Authorization": f"Bearer {fuzz_token()}"})
            except (Exception, BaseExceptionGroup) as exc:  # report all operations' failures
                on = " (existing key)" if path_parameters else ""
                failures.append(f"{operation.label} [{mode.value}{on}]: {exc}")
    print(f"fuzzed with {examples} requests")
    assert not failures, "\n\n".join(failures)


def _fuzz(strategy: Any, base_url: str, session: requests.Session,
          headers: dict[str, str]) -> int:
    """Runs one operation's examples; returns how many were sent."""
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.headers = {**(case.headers or {}), **headers}  # a real user, always
        case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30)

    run()
    return sent


def _new_key(apikm: ApikmServer, token: str) -> str:
    response = requests.post(f"{apikm.url}/v1/keys", json={"name": "fuzz", "roles": []},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
