"""Square webhook signatures (syncd.web.signatures), checked against Square's published vectors."""

from __future__ import annotations

import pytest

from syncd.errors import SignatureError
from syncd.simulator.webhooks import sign as simulator_sign
from syncd.web.signatures import MISMATCH, MISSING, SignatureVerifier, sign

# Test vectors published by Square in its official Python SDK, square/square-python-sdk,
# tests/integration/test_webhooks_helper.py (the same values are in tests/utilities/
# test_webhooks_helper.py of older releases): a real `webhooks.test_notification` body, the
# subscription's signature key, its notification URL, and the x-square-hmacsha256-signature value.
SQUARE_BODY = (
    b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
    b'"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f",'
    b'"created_at":"2022-07-13T20:30:59.037339943Z",'
    b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}'
)
SQUARE_SIGNATURE = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
SQUARE_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
SQUARE_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
# Same file, test_signature_validation_escaped_pass: a body with characters JSON may escape.
ESCAPED_BODY = b'{"data":{"type":"webhooks","id":">id<"}}'
ESCAPED_SIGNATURE = "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U="


def test_square_documented_vectors_verify() -> None:
    """Square's own SDK test vectors (square/square-python-sdk,
    tests/integration/test_webhooks_helper.py) verify, and signing reproduces their headers:
    HMAC-SHA256 over notification URL + raw body, base64."""
    assert sign(SQUARE_KEY, SQUARE_URL, SQUARE_BODY) == SQUARE_SIGNATURE
    SignatureVerifier([SQUARE_KEY], SQUARE_URL).verify(SQUARE_SIGNATURE, SQUARE_BODY)
    escaped_url = "https://webhook.site/webhooks"
    assert sign("signature-key", escaped_url, ESCAPED_BODY) == ESCAPED_SIGNATURE
    SignatureVerifier(["signature-key"], escaped_url).verify(ESCAPED_SIGNATURE, ESCAPED_BODY)


def test_simulator_signs_like_square() -> None:
    """The simulator's independent signing code agrees with Square's vector (and so with syncd)."""
    assert simulator_sign(SQUARE_KEY, SQUARE_URL, SQUARE_BODY) == SQUARE_SIGNATURE


def _reason(verifier: SignatureVerifier, header: str | None, body: bytes) -> str:
    with pytest.raises(SignatureError) as info:
        verifier.verify(header, body)
    return str(info.value.context["reason"])


def test_tampered_body_fails() -> None:
    """One changed byte in the body (Square's vector with another created_at) fails, and so does
    the same JSON re-formatted with whitespace: the raw bytes are signed, not the parsed JSON."""
    verifier = SignatureVerifier([SQUARE_KEY], SQUARE_URL)
    tampered = SQUARE_BODY.replace(b"2022-07-13", b"2022-06-13")
    assert _reason(verifier, SQUARE_SIGNATURE, tampered) == MISMATCH
    assert _reason(verifier, SQUARE_SIGNATURE, SQUARE_BODY.replace(b",", b", ")) == MISMATCH


def test_wrong_notification_url_fails() -> None:
    """The URL is part of the signed message: a verifier configured with another URL (one character
    short, as in Square's SDK test) refuses the genuine signature."""
    verifier = SignatureVerifier([SQUARE_KEY], SQUARE_URL.replace("/679a", "/79a"))
    assert _reason(verifier, SQUARE_SIGNATURE, SQUARE_BODY) == MISMATCH


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_fails(header: str | None) -> None:
    """No header, or an empty one, is reported as missing rather than as a mismatch."""
    verifier = SignatureVerifier([SQUARE_KEY], SQUARE_URL)
    expected = MISSING if header is None or header == "" else MISMATCH
    assert _reason(verifier, header, SQUARE_BODY) == expected


@pytest.mark.parametrize(
    "header",
    [
        "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4",
        "not base64 ✓",
        "1z2n3DEJJiUPKcPzQo1ftvbxGdw=",
        SQUARE_SIGNATURE * 2,
    ],
)
def test_malformed_or_foreign_headers_fail(header: str) -> None:
    """Truncated, non-ASCII, HMAC-SHA1-sized (the legacy x-square-signature) and doubled values
    fail cleanly with a SignatureError, never another exception."""
    verifier = SignatureVerifier([SQUARE_KEY], SQUARE_URL)
    assert _reason(verifier, header, SQUARE_BODY) == MISMATCH


def test_rotated_keys_old_and_new_both_valid() -> None:
    """During rotation two keys are configured: signatures by either verify, a third key fails."""
    verifier = SignatureVerifier(["new-key", SQUARE_KEY], SQUARE_URL)
    verifier.verify(SQUARE_SIGNATURE, SQUARE_BODY)
    verifier.verify(sign("new-key", SQUARE_URL, SQUARE_BODY), SQUARE_BODY)
    other = sign("MCmhFRxGX82xMwg5FsaoQA", SQUARE_URL, SQUARE_BODY)
    assert _reason(verifier, other, SQUARE_BODY) == MISMATCH


def test_surrounding_whitespace_in_header_is_ignored() -> None:
    """A proxy that pads the header value does not break verification."""
    SignatureVerifier([SQUARE_KEY], SQUARE_URL).verify(f" {SQUARE_SIGNATURE} ", SQUARE_BODY)


def test_verifier_needs_a_key_and_a_url() -> None:
    """A verifier without keys or without a notification URL cannot exist (it would accept
    nothing, silently)."""
    with pytest.raises(ValueError, match="key"):
        SignatureVerifier([], SQUARE_URL)
    with pytest.raises(ValueError, match="URL"):
        SignatureVerifier([SQUARE_KEY], "")
