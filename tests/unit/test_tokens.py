"""Token verification: what is accepted, what is refused and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.tokens import (
    AuthConfigError,
    InvalidToken,
    TokenVerifier,
    verifier_from_settings,
)
from infra.settings import Settings
from infra.tokens import MintError, generate_secret, mint_token

SECRET = "s" * 40
SETTINGS = Settings(jwt_hs256_secret=SECRET)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    .decode()
)


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": "u1",
        "partner_id": "p1",
        "roles": ["partner_admin"],
        # Parametrized tokens are minted at collection time, possibly minutes
        # before their test runs: keep them valid for the whole session.
        "exp": now + 6 * 3600,
    } | over


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def test_minted_token_round_trips() -> None:
    token = mint_token(
        SETTINGS, sub="u1", partner_id="p1", roles=["partner_admin", "ingest"]
    )
    p = verifier_from_settings(SETTINGS).verify(token)
    assert (p.sub, p.partner_id) == ("u1", "p1")
    assert p.roles == frozenset({"partner_admin", "ingest"})
    assert not p.unrestricted


def test_unknown_roles_are_dropped() -> None:
    token = jwt.encode(_claims(roles=["superuser", "ingest"]), SECRET, "HS256")
    assert verifier_from_settings(SETTINGS).verify(token).roles == {"ingest"}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode(_claims(exp=int(time.time()) - 120), SECRET, "HS256"), "expired"),
        (
            jwt.encode(_claims(), "another secret of 32+ bytes....", "HS256"),
            "signature",
        ),
        (jwt.encode(_claims(), SECRET, "HS512"), "algorithm 'HS512'"),
        ("not.a.jwt", "malformed"),
        ("garbage", "malformed"),
        (jwt.encode({"sub": "u1", "partner_id": "p1"}, SECRET, "HS256"), "'exp'"),
        (
            jwt.encode(
                {"sub": "u1", "exp": int(time.time()) + 6 * 3600}, SECRET, "HS256"
            ),
            "'partner_id'",
        ),
        (jwt.encode(_claims(sub="bad id!"), SECRET, "HS256"), "must be ids"),
        (jwt.encode(_claims(roles="partner_admin"), SECRET, "HS256"), "roles"),
        (jwt.encode(_claims(), RSA_KEY, "RS256"), "algorithm 'RS256'"),
    ],
)
def test_refused_tokens_say_why(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verifier_from_settings(SETTINGS).verify(token)


def test_alg_none_is_refused_even_with_a_valid_payload() -> None:
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(InvalidToken, match="algorithm 'none'"):
        verifier_from_settings(SETTINGS).verify(unsigned)
    # A "none" header in any spelling, and a missing alg, too.
    for header in ({"alg": "None"}, {"alg": "NONE"}, {"typ": "JWT"}):
        token = f"{_b64(header)}.{_b64(_claims())}."
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier_from_settings(SETTINGS).verify(token)


def test_rs256_with_public_key_and_no_key_confusion() -> None:
    verifier = TokenVerifier(hs256_secret=SECRET, rs256_public_key=RSA_PUBLIC_PEM)
    good = jwt.encode(_claims(), RSA_KEY, "RS256")
    assert verifier.verify(good).sub == "u1"
    # The classic confusion attack: HS256 "signed" with the public key's PEM.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(_claims())}"
    mac = hmac.new(RSA_PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256)
    signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    forged = f"{signing_input}.{signature}"
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(forged)
    only_rsa = TokenVerifier(rs256_public_key=RSA_PUBLIC_PEM)
    with pytest.raises(InvalidToken, match="algorithm 'HS256'"):
        only_rsa.verify(jwt.encode(_claims(), SECRET, "HS256"))


def test_audience_and_issuer_are_required_when_configured() -> None:
    settings = Settings(
        jwt_hs256_secret=SECRET, jwt_audience="mastery", jwt_issuer="idp"
    )
    verifier = verifier_from_settings(settings)
    assert verifier.verify(mint_token(settings, sub="u1", partner_id="p1")).sub == "u1"
    with pytest.raises(InvalidToken, match="'aud'"):
        verifier.verify(jwt.encode(_claims(iss="idp"), SECRET, "HS256"))
    with pytest.raises(InvalidToken, match=r"(?i)audience"):
        verifier.verify(jwt.encode(_claims(iss="idp", aud="other"), SECRET, "HS256"))
    with pytest.raises(InvalidToken, match=r"(?i)issuer"):
        verifier.verify(jwt.encode(_claims(iss="evil", aud="mastery"), SECRET, "HS256"))


def test_misconfiguration_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="no key is configured"):
        verifier_from_settings(Settings())
    with pytest.raises(AuthConfigError, match="at least 32 bytes"):
        TokenVerifier(hs256_secret="short")
    with pytest.raises(AuthConfigError, match="PEM"):
        TokenVerifier(rs256_public_key="not a key")
    with pytest.raises(MintError, match="MASTERY_JWT_HS256_SECRET"):
        mint_token(Settings(), sub="u1", partner_id="p1")
    assert len(generate_secret()) >= 32


def test_a_verified_token_is_remembered_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = TokenVerifier(hs256_secret=SECRET, leeway_s=5)
    now = time.time()
    token = jwt.encode(_claims(exp=int(now) + 60), SECRET, algorithm="HS256")
    first = verifier.verify(token)
    # Remembered: the signature is not checked again (PyJWT is not called).
    calls: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(
        jwt, "decode", lambda *a, **k: calls.append("decode") or real_decode(*a, **k)
    )
    assert verifier.verify(token) is first and calls == []
    # A token differing by one byte is verified on its own, and refused.
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidToken):
        verifier.verify(tampered)
    assert calls == ["decode"]
    assert first.refused_from == int(now) + 65
    # Past exp + leeway a remembered token is refused as expired.
    monkeypatch.setattr(jwt, "decode", real_decode)
    short = TokenVerifier(hs256_secret=SECRET, leeway_s=0)
    exp = int(time.time()) + 1
    brief = jwt.encode(_claims(exp=exp), SECRET, algorithm="HS256")
    assert short.verify(brief).refused_from == exp
    while time.time() < exp + 0.05:
        time.sleep(0.05)
    with pytest.raises(InvalidToken) as refused:
        short.verify(brief)
    assert refused.value.reason == "expired"
    assert brief not in short._verified


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import tokens

    monkeypatch.setattr(tokens, "VERIFIED_TOKENS_KEPT", 3)
    verifier = TokenVerifier(hs256_secret=SECRET)
    minted = [
        jwt.encode(_claims(sub=f"u{i}"), SECRET, algorithm="HS256") for i in range(5)
    ]
    for token in minted:
        verifier.verify(token)
    assert list(verifier._verified) == minted[2:]  # the oldest left first
