"""keyblob.trust: trust scopes (name patterns), pinned CryptoAPI signers, and the strict
reading of the state document (FORMAT.md 5.2)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

import state_support as ss
from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.providers.software import Home
from keyblob.trust import (
    CapiSigner,
    State,
    TrustedSigner,
    canonical_json_value,
    capi_fingerprint,
    check_pattern,
    find_signer,
    name_matches,
    parse_scope,
    require_trusted,
)
from support import FAST_KDF, PASSPHRASE


def _signer(seed: int = 1, names: tuple[str, ...] | None = None) -> TrustedSigner:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = key_id_for(Suite.X25519, KeyRole.SIGNATURE, raw)
    return TrustedSigner(key_id, Suite.X25519, raw, bytes(range(32)), "alice", 7, names)


@pytest.fixture(scope="module")
def capi_spki() -> bytes:
    return (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# -- the pattern language ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("team-*", "team-payroll", True),
        ("team-*", "team-", True),  # * matches nothing too
        ("team-*", "team", False),
        ("team-*", "xteam-a", False),  # anchored at the start
        ("*-db", "root-db", True),
        ("*-db", "root-db2", False),  # anchored at the end
        ("?", "a", True),
        ("?", "ab", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("*a*b*", "xxaxxbxx", True),
        ("*a*b*", "xxbxxaxx", False),
        ("payroll", "payroll", True),
        ("payroll", "payroll2", False),
        ("a.b", "axb", False),  # . is a literal, not "any character"
        ("*", "anything.at-all_9", True),
        ("**", "x", True),
    ],
)
def test_name_matches(pattern, name, expected):
    assert name_matches(check_pattern(pattern), name) is expected


@pytest.mark.parametrize(
    "bad", ["", "Team-*", "[ab]*", "a/b", "a b", "team\\*", "x" * 129, "é*", "a{b,c}"]
)
def test_patterns_outside_the_language_are_refused(bad):
    with pytest.raises(ValueError, match="not a name pattern"):
        check_pattern(bad)


def test_matching_is_not_exponential():
    """A hostile pattern (many stars) against a long non-matching name stays fast: the
    walk is bounded by len(pattern) * len(name), unlike a backtracking regex."""
    assert not name_matches("*a" * 60 + "*b", "a" * 128)


def test_parse_scope_splits_sorts_and_dedupes():
    assert parse_scope(["team-*,ops", "ops", " db-? "]) == ("db-?", "ops", "team-*")
    assert parse_scope(["team-*", "*"]) is None  # * allows every name: no scope at all
    for bad in ([""], ["a,,b"], ["A"]):
        with pytest.raises(UsageError):
            parse_scope(bad)
    with pytest.raises(UsageError, match="at most 64"):
        parse_scope([",".join(f"n{i}" for i in range(65))])


# -- import step 2 -------------------------------------------------------------------------


def test_require_trusted_applies_the_scope_but_not_to_the_own_key():
    signer = _signer(names=("team-*",))
    state = State(trusted=(signer,))
    own = _signer(2)
    assert require_trusted(own.key_id, own.public, state, signer.key_id, "team-a") == signer.public
    with pytest.raises(VerificationError) as e:
        require_trusted(own.key_id, own.public, state, signer.key_id, "root-db")
    assert str(e.value) == (
        f"signed by sg-{signer.key_id.short} (alice), which is trusted only for names "
        "team-*, not for 'root-db'"
    )
    # The container's own key is never restricted.
    assert require_trusted(own.key_id, own.public, state, own.key_id, "root-db") == own.public


def test_with_signer_updates_only_the_scope_and_the_label():
    first = _signer()
    state = State(trusted=(first,))
    narrowed = state.with_signer(TrustedSigner(**{**first.__dict__, "added": 99, "label": "x"}))
    # same key: date and place kept; the label is its owner's, the newer file's (FORMAT.md 3.2)
    assert narrowed.trusted == (replace(first, label="x"),)
    narrowed = state.with_signer(_signer(names=("a",)))
    assert narrowed.trusted[0].names == ("a",) and narrowed.trusted[0].added == 7


# -- the state document ------------------------------------------------------------------


def _doc(state: State) -> dict:
    return {"format": "keyblob-state/v1", "container": "c", **state.to_json()}


def test_state_round_trips_with_scopes_and_capi_signers(capi_spki):
    state = State(
        marks={"a": 3},
        trusted=(_signer(names=("team-*",)), _signer(3)),
        capi_signers=(CapiSigner(capi_spki, "win", 5, ("payroll",)),),
    )
    doc = json.loads(json.dumps(_doc(state)))
    assert State.from_json(doc, suite=Suite.X25519) == state
    assert doc["trusted"][0]["names"] == ["team-*"]
    assert "names" not in doc["trusted"][1]  # unrestricted: no member, as before scopes


def test_a_state_without_the_new_members_still_reads():
    """What earlier versions wrote: no names (every name), no capi_signers."""
    signer = _signer()
    doc = _doc(State(trusted=(signer,)))
    assert "capi_signers" not in doc and "names" not in doc["trusted"][0]
    state = State.from_json(doc)
    assert state.trusted[0].names is None and state.trusted[0].allows("anything")
    assert state.capi_signers == ()


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(extra=1),  # an unknown member of the state
        lambda d: d["trusted"][0].update(extra="x"),  # of a trusted entry
        lambda d: d["capi_signers"][0].update(key_id="00" * 16),  # of a CryptoAPI signer
        lambda d: d.pop("trusted"),
        lambda d: d["trusted"][0].update(names=[]),  # an empty scope: no such thing
        lambda d: d["trusted"][0].update(names=["b", "a"]),  # not sorted
        lambda d: d["trusted"][0].update(names=["a", "a"]),  # twice
        lambda d: d["trusted"][0].update(names=["A*"]),  # not a pattern
        lambda d: d["trusted"][0].update(names="a"),  # not a list
        lambda d: d.update(capi_signers=[]),  # written only when there is one
        lambda d: d["capi_signers"][0].update(public=d["trusted"][0]["public"]),  # not RSA
        lambda d: d.update(capi_signers=d["capi_signers"] * 2),  # the same key twice
        lambda d: d["trusted"][0].update(suite="rsa"),  # another suite than the container's
    ],
)
def test_state_members_are_strict(edit, capi_spki):
    doc = _doc(
        State(trusted=(_signer(names=("a",)),), capi_signers=(CapiSigner(capi_spki, "w", 1),))
    )
    State.from_json(json.loads(json.dumps(doc)), suite=Suite.X25519)  # the control
    edit(doc)
    with pytest.raises(FormatError, match="home state"):
        State.from_json(doc, suite=Suite.X25519)


def test_a_trusted_signer_of_another_suite_is_refused_in_the_state():
    public = _signer().public  # the state does not decode keys: any bytes do here
    rsa_signer = TrustedSigner(
        key_id_for(Suite.RSA, KeyRole.SIGNATURE, public), Suite.RSA, public, public, "r", 1
    )
    doc = _doc(State(trusted=(rsa_signer,)))
    assert State.from_json(doc).trusted == (rsa_signer,)  # no suite given: not checked
    with pytest.raises(FormatError, match="not of the container's suite x25519"):
        State.from_json(doc, suite=Suite.X25519)


@pytest.mark.parametrize("value", ["true", "false", "null", "1.0", "1e3", "-0.5"])
def test_values_without_a_canonical_encoding_are_refused(value):
    with pytest.raises(ValueError, match="no encoding"):
        canonical_json_value(f'{{"a":[1,{{"b":{value}}}]}}'.encode())
    assert canonical_json_value(b'{"a":[1,{"b":"x"}]}') == {"a": [1, {"b": "x"}]}


def test_find_signer_finds_capi_signers_by_fingerprint(capi_spki):
    capi = CapiSigner(capi_spki, "w", 1)
    state = State(trusted=(_signer(),), capi_signers=(capi,))
    assert find_signer(state, capi.fingerprint[:8]) == capi
    assert capi.fingerprint == hashlib.sha256(capi_spki).hexdigest()[:32]
    assert capi_fingerprint(capi_spki) == capi.fingerprint


# -- through the software provider: the MAC'd state ---------------------------------------


def _remac(c, doc: dict, raw: bytes | None = None) -> bytes:
    body = {k: v for k, v in doc.items() if k != "mac"}
    text = raw or json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(c._keys.state, text, hashlib.sha256).hexdigest()
    return text[:-1] + b',"mac":"' + mac.encode() + b'"}'


def test_the_macd_state_round_trips_the_new_members(tmp_path, capi_spki):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    signer = _signer(names=("db-?", "team-*"))
    capi = CapiSigner(capi_spki, "win", 3, ("payroll",))
    c.update_state(lambda s: s.with_signer(signer).with_capi_signer(capi))
    reopened = home.open("c", PASSPHRASE).state()
    assert reopened.trusted == (signer,) and reopened.capi_signers == (capi,)
    raw = ss.head_bytes(tmp_path / "h" / "containers" / "c")
    assert b'"names":["db-?","team-*"]' in raw and b'"capi_signers":[' in raw


def test_extra_members_under_a_valid_mac_are_malformed(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    folder = tmp_path / "h" / "containers" / "c"
    doc = ss.head(folder)  # the head of state.db (FORMAT.md 5.2)
    ss.set_head(folder, _remac(c, doc))
    home.open("c", PASSPHRASE).state()  # the control
    for extra in ({"comment": "x"}, {"high_water": {}}):
        ss.set_head(folder, _remac(c, {**doc, **extra}))
        with pytest.raises(FormatError, match="not a valid state document"):
            home.open("c", PASSPHRASE).state()
    ss.make_v1(c, {})  # and a version 1 state.json (5.2.1)
    path = folder / "state.json"
    doc = json.loads(path.read_bytes())
    path.write_bytes(_remac(c, doc))
    home.open("c", PASSPHRASE).state()  # the control
    path.write_bytes(_remac(c, {**doc, "comment": "x"}))
    with pytest.raises(FormatError, match="not a valid state document"):
        home.open("c", PASSPHRASE).state()


@pytest.mark.parametrize("value", [b"true", b"null", b"5.0"])
def test_true_null_float_are_refused_before_the_mac(tmp_path, value):
    """The MAC is over the canonical re-encoding, which has no form for these: the state is
    refused as modified, whether or not a MAC over some encoding of them would match."""
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    ss.make_v1(c, {})
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    body = b'{"container":"c","format":"keyblob-state/v1","high_water":{"p":' + value
    path.write_bytes(_remac(c, {}, body + b'},"trusted":[]}'))
    with pytest.raises(VerificationError, match="modified outside keyblob"):
        home.open("c", PASSPHRASE).state()
    path.write_bytes(_remac(c, {}, body.replace(value, b"5") + b'},"trusted":[]}'))
    assert home.open("c", PASSPHRASE).state().generation_floor("p") == 5  # the control
