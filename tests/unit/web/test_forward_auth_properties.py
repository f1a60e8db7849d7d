"""Properties of finding the key in a forward-auth request (Hypothesis): nothing a client
sends makes it raise, and a key in the configured header always wins."""

from __future__ import annotations

import base64

from hypothesis import example, given
from hypothesis import strategies as st

from apikm.config import Settings
from apikm.keys.format import generate_key
from apikm.web.forward_auth import ForwardAuthRules, credential_from_authorization

RULES = ForwardAuthRules(Settings(_env_file=None))
CONFIGURED = Settings(_env_file=None).auth_header[0].lower().encode()
NAMES = [CONFIGURED, b"authorization", b"x-original-uri", b"x-forwarded-uri",
         b"x-auth-require-roles", b"cookie"]


def _basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


header_values = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda s, b: s + b, st.sampled_from([b"Bearer ", b"Basic ", b"basic  ", b""]),
              st.binary(max_size=100)),
    st.binary(max_size=100).map(_basic),
    st.builds(lambda p, b: p + b, st.sampled_from([b"/x?apikey=", b"//[?apikey=", b"?a=1&",
                                                   b"http://[::1/?apikey="]),
              st.binary(max_size=100)),
)
headers = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.binary(max_size=20)),
                          header_values, max_size=6)
queries = st.lists(st.tuples(st.sampled_from(["apikey", "role", "jwt", ""]), st.text(max_size=60)),
                   max_size=4).map(tuple)


@given(headers, queries)
@example({b"x-original-uri": b"//[?apikey=x"}, ())
@example({b"authorization": b"Basic \xe9"}, ())
def test_finding_the_key_never_raises(found_in: dict[bytes, bytes],
                                      query: tuple[tuple[str, str], ...]) -> None:
    key = RULES.find_key(found_in, query)
    assert key is None or isinstance(key, str)


@given(st.binary(max_size=300))
def test_reading_authorization_never_raises(raw: bytes) -> None:
    credential = credential_from_authorization(raw.decode("latin-1"))
    assert credential is None or (isinstance(credential, str) and credential)


@given(headers, queries, st.data())
def test_a_key_in_the_configured_header_always_wins(
        found_in: dict[bytes, bytes], query: tuple[tuple[str, str], ...],
        data: st.DataObject) -> None:
    key = generate_key("apikm").full
    other = generate_key("apikm").full  # a well-formed rival everywhere else
    rivals = {b"authorization": b"Bearer " + other.encode(),
              b"x-original-uri": b"/data?apikey=" + other.encode()}
    picked = data.draw(st.sets(st.sampled_from(sorted(rivals))), label="rivals")
    found_in = {**found_in, **{name: rivals[name] for name in picked}}
    padding = data.draw(st.sampled_from(["", " ", "\t"]), label="padding")
    found_in[CONFIGURED] = (padding + key + padding).encode()
    assert RULES.find_key(found_in, (("apikey", other), *query)) == key


@given(st.binary(max_size=60).filter(lambda user: b":" not in user))
def test_any_basic_user_name_leaves_the_password(user: bytes) -> None:
    key = generate_key("apikm").full
    assert credential_from_authorization(_basic(user + b":" + key.encode()).decode()) == key
