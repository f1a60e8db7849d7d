from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from starlette.datastructures import FormData

from apikm.config import Settings
from apikm.web.ui.forms import expiry_choices, parse_new_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def form(**values: str | list[str]) -> FormData:
    items: list[tuple[str, str]] = []
    for name, value in values.items():
        items += [(name, v) for v in value] if isinstance(value, list) else [(name, value)]
    return FormData(items)


def test_a_complete_form_becomes_a_new_key() -> None:
    parsed = parse_new_key(form(name=" QGIS ", expiry="30", roles=["a", "geoserver:read"],
                                networks="10.0.0.0/8, 192.168.1.7", meta='{"p": 1}'),
                           settings(), NOW)
    assert parsed.errors == {}
    assert parsed.new_key is not None
    assert parsed.new_key.name == "QGIS"
    assert parsed.new_key.expires_at == NOW + timedelta(days=30)
    assert list(parsed.new_key.roles) == ["a", "geoserver:read"]
    assert list(parsed.new_key.allowed_networks) == ["10.0.0.0/8", "192.168.1.7/32"]
    assert parsed.new_key.meta == {"p": 1}


def test_the_default_expiry_is_left_to_the_policy() -> None:
    parsed = parse_new_key(form(name="k", expiry="default"), settings(), NOW)
    assert parsed.new_key is not None and parsed.new_key.expires_at is None


def test_a_date_means_the_end_of_that_day_capped_by_the_policy() -> None:
    s = settings(max_apikey_ttl_hour=240, default_apikey_ttl_hour=24)
    parsed = parse_new_key(form(name="k", expiry="date", expiry_date="2026-03-05"), s, NOW)
    assert parsed.new_key is not None
    assert parsed.new_key.expires_at == datetime(2026, 3, 5, 23, 59, 59, tzinfo=UTC)
    last = parse_new_key(form(name="k", expiry="date", expiry_date="2026-03-11"), s, NOW)
    assert last.new_key is not None and last.new_key.expires_at == NOW + timedelta(hours=240)
    late = parse_new_key(form(name="k", expiry="date", expiry_date="2026-03-12"), s, NOW)
    assert late.errors["expiry"] == ("Keys can live at most 10 days: pick 11 March 2026 or "
                                     "earlier.")
    past = parse_new_key(form(name="k", expiry="date", expiry_date="2026-02-28"), s, NOW)
    assert past.errors["expiry"] == "Pick a day after today."


def test_the_date_is_the_native_inputs_iso_value_and_errors_name_no_format() -> None:
    s = settings(max_apikey_ttl_hour=240, default_apikey_ttl_hour=24)
    for typed in ("", "03/05/2026", "2026-3-5", "2026-02-30", "20260305"):
        parsed = parse_new_key(form(name="k", expiry="date", expiry_date=typed), s, NOW)
        message = parsed.errors["expiry"]
        assert message == "Pick the day the key should expire in the date field.", typed
        assert "YYYY" not in message and "mm/dd" not in message.lower()
    choices = expiry_choices(s, NOW.date())
    assert (choices.min_date, choices.max_date) == ("2026-03-02", "2026-03-11")
    assert choices.max_label == "11 March 2026"


def test_every_problem_is_reported_at_once() -> None:
    parsed = parse_new_key(form(name="", expiry="9", networks="10.0.0.0/8 nope",
                                meta="[1, 2]"), settings(), NOW)
    assert parsed.new_key is None
    assert set(parsed.errors) == {"name", "expiry", "networks", "meta"}
    assert "JSON object" in parsed.errors["meta"]
    bad_json = parse_new_key(form(name="k", meta="{oops"), settings(), NOW)
    assert bad_json.errors["meta"] == ('Metadata must be a JSON object, e.g. {"project": '
                                       '"ndvi"}; error at line 1, column 2.')
    second_line = parse_new_key(form(name="k", meta='{"a": 1,\n  b}'), settings(), NOW)
    assert second_line.errors["meta"].endswith("error at line 2, column 3.")
    assert "Expecting" not in second_line.errors["meta"]  # not Python's parser wording


def test_presets_longer_than_the_policy_are_not_offered() -> None:
    choices = expiry_choices(settings(max_apikey_ttl_hour=24 * 30,
                                      default_apikey_ttl_hour=24), date(2026, 3, 1))
    assert [o.value for o in choices.options] == ["default", "7", "30", "date"]
    assert choices.max_date == "2026-03-31"
    assert choices.options[0].label == "Default (1 day)"


def test_meta_is_checked_like_the_api_does() -> None:
    deep = '{"a":' * 300 + "{}" + "}" * 300
    parsed = parse_new_key(form(name="k", meta=deep), settings(), NOW)
    assert parsed.new_key is None and "8 levels" in parsed.errors["meta"]
    too_deep_for_python = '{"a":' * 100_000 + "{}" + "}" * 100_000
    parsed = parse_new_key(form(name="k", meta=too_deep_for_python), settings(), NOW)
    assert parsed.new_key is None and "8 levels" in parsed.errors["meta"]
    big = parse_new_key(form(name="k", meta='{"b": "' + "x" * 5000 + '"}'), settings(), NOW)
    assert "limit is 4096" in big.errors["meta"]


def test_name_and_description_follow_the_api_rules() -> None:
    for name in ("bell\x07", "tab\tinside", "esc\x1b[2J", "rtl\u202eexe.txt", "nul\x00"):
        parsed = parse_new_key(form(name=name), settings(), NOW)
        assert parsed.new_key is None and "control characters" in parsed.errors["name"], name
    long = parse_new_key(form(name="x" * 101), settings(), NOW)
    assert "at most 100" in long.errors["name"]
    described = parse_new_key(form(name="k", description="line one\nline two"), settings(), NOW)
    assert described.new_key is not None
    escaped = parse_new_key(form(name="k", description="\x1b[31mred"), settings(), NOW)
    assert "control characters" in escaped.errors["description"]


def test_all_my_roles_is_its_own_choice() -> None:
    parsed = parse_new_key(form(name="k", all_roles="on"), settings(), NOW)
    assert parsed.new_key is not None
    assert parsed.new_key.all_roles is True and list(parsed.new_key.roles) == []
    both = parse_new_key(form(name="k", all_roles="on", roles=["a"]), settings(), NOW)
    assert both.new_key is None
    assert "not both" in both.errors["roles"]


def test_the_forms_allow_as_many_networks_as_the_api_and_no_more() -> None:
    """The API refuses a 101st network; the create and edit forms did not."""
    from apikm.keys.policy import MAX_NETWORKS
    from apikm.web.ui.forms import parse_key_edit

    many = "\n".join(f"10.0.{n // 256}.{n % 256}" for n in range(MAX_NETWORKS + 1))
    created = parse_new_key(form(name="k", networks=many), settings(), NOW)
    assert created.new_key is None and "at most 100 networks" in created.errors["networks"]
    key = {"name": "k", "description": None, "allowed_networks": [], "meta": {},
           "rate_limit": None}
    edited = parse_key_edit(form(name="k", networks=many), key, settings())
    assert edited.changes is None and "at most 100 networks" in edited.errors["networks"]
    fine = "\n".join(many.splitlines()[:MAX_NETWORKS])
    assert parse_key_edit(form(name="k", networks=fine), key, settings()).errors == {}
    junk = parse_key_edit(form(name="k", networks="x" * 100_000), key, settings())
    assert len(junk.errors["networks"]) < 200  # not the whole input echoed back
