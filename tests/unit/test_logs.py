from __future__ import annotations

from apikm.keys.format import generate_key
from apikm.logs import Redactor


def test_keys_jwts_and_secret_fields_are_masked() -> None:
    key = generate_key("apikm").full
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    event = {"event": f"failed for {key}", "detail": f"Bearer {jwt}", "client_secret": "s3cr3t",
             "Authorization": "Bearer x", "pepper": "p", "user": "alice", "count": 3}
    out = Redactor("apikm")(None, "info", dict(event))
    text = repr(out)
    for secret in (key, jwt, "s3cr3t", "Bearer x"):
        assert secret not in text
    assert out["user"] == "alice" and out["count"] == 3
    assert out["event"] == "failed for [key]"
