"""Standard Webhooks signing (symmetric, ``v1``): what a receiver checks with any Standard
Webhooks library (``standardwebhooks.Webhook(secret).verify(body, headers)``).

The secret is ``whsec_`` + base64 of 24..64 random bytes (the spec's range); the HMAC key is the
decoded bytes. The signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` (the raw body
bytes), and ``webhook-signature`` is ``v1,`` + base64(HMAC-SHA256(key, content)). Pure functions
of the standard library: the config validates secrets with ``parse_secret``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def parse_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ValueError (an operator's message) otherwise."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(
            f"must start with {SECRET_PREFIX} (a Standard Webhooks secret:"
            f" {SECRET_PREFIX} + base64 of {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} random bytes)"
        )
    encoded = text[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX} must be valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes (got {len(key)});"
            f" make one with: python -c 'import base64, os;"
            f' print("{SECRET_PREFIX}" + base64.b64encode(os.urandom(32)).decode())\''
        )
    return key


def new_secret(size: int = 32) -> str:
    """A fresh random secret in the spec's format (for tests, benches and the docs' recipe)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }
