from __future__ import annotations

import hashlib
import json

import pytest

from apikm.leaks.reports import Outcome, Reported, ReportError, answer, label, parse_report


def test_github_payload_is_read_and_answered_with_hash_type_and_label() -> None:
    body = json.dumps([{"token": "apikm_abc", "type": "apikm_api_key",
                        "url": "https://github.com/o/r/blob/1/a.txt", "source": "content"},
                       {"token": "t2", "type": "x", "url": None, "extra": 1}]).encode()
    first, second = parse_report(body)
    assert (first.type, first.url, first.source) == ("apikm_api_key",
                                                     "https://github.com/o/r/blob/1/a.txt",
                                                     "content")
    assert (second.url, second.source) == ("", "")
    assert "apikm_abc" not in repr(first)
    assert answer(first, Outcome.REVOKED, detailed=False) == {
        "token_hash": hashlib.sha256(b"apikm_abc").hexdigest(),
        "token_type": "apikm_api_key", "label": "true_positive"}
    assert answer(second, Outcome.UNKNOWN, detailed=True, key_id=None) == {
        "token_hash": hashlib.sha256(b"t2").hexdigest(), "token_type": "x",
        "label": "false_positive", "outcome": "unknown", "key_id": None}


def test_labels_are_githubs_two() -> None:
    assert {label(o) for o in Outcome} == {"true_positive", "false_positive"}
    assert [o for o in Outcome if label(o) == "true_positive"] == [
        Outcome.REVOKED, Outcome.ALREADY_REVOKED, Outcome.ROTATED_AWAY]


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    (b"\xff\xfe", 400),
    (b'{"token": "x"}', 422),
    (b'[{"type": "x"}]', 422),
    (b'[{"token": 5}]', 422),
    (b'[{"token": ""}]', 422),
    (json.dumps([{"token": "x" * 513}]).encode(), 422),
    (b"[1]", 422),
])
def test_malformed_reports_are_refused(body: bytes, status: int) -> None:
    with pytest.raises(ReportError) as caught:
        parse_report(body)
    assert caught.value.status == status


def test_a_refusal_never_echoes_a_token() -> None:
    secret = "apikm_" + "S" * 600
    with pytest.raises(ReportError) as caught:
        parse_report(json.dumps([{"token": secret}]).encode())
    assert "SSSS" not in json.dumps(caught.value.details)


def test_an_empty_report_is_fine() -> None:
    assert parse_report(b"[]") == []
    assert Reported("x").token_hash == hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads
    b'[{"token": ' + b"1" * 5000 + b"}]",  # ValueError: too many digits for an int
    b"",
    b"\x00",
], ids=["deep-nesting", "huge-integer", "empty", "nul"])
def test_bodies_json_cannot_read_are_a_400(body: bytes) -> None:
    with pytest.raises(ReportError) as caught:
        parse_report(body)
    assert caught.value.status == 400


@pytest.mark.parametrize("item", [
    {"token": "apikm_\ud800"},  # a lone surrogate: no UTF-8, no token hash, no answer
    {"token": "x", "type": "\udfff"},  # echoed as token_type
    {"token": "x", "url": "https://github.com/o/r\u0000"},  # PostgreSQL's JSONB refuses NUL
    {"token": "x", "source": "content\u0000"},
], ids=["token-surrogate", "type-surrogate", "url-nul", "source-nul"])
def test_text_that_cannot_be_answered_or_stored_is_a_422(item: dict[str, str]) -> None:
    with pytest.raises(ReportError) as caught:
        parse_report(json.dumps([item]).encode())
    assert caught.value.status == 422
    assert caught.value.details and caught.value.details[0]["field"] in (
        "0.token", "0.type", "0.url", "0.source")


def test_nul_in_a_token_is_only_not_a_key() -> None:
    [item] = parse_report(json.dumps([{"token": "apikm_\u0000"}]).encode())
    assert item.token_hash  # answered as a false positive, never stored


def test_over_long_descriptions_are_cut_not_refused() -> None:
    """A path deep in a repository makes a long URL; refusing it would refuse the batch."""
    [item] = parse_report(json.dumps([{"token": "t", "url": "https://github.com/" + "a" * 5000,
                                       "type": "T" * 300, "source": "s" * 300}]).encode())
    assert (len(item.url), len(item.type), len(item.source)) == (2048, 200, 100)
