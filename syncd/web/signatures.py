"""Square webhook signatures: HMAC-SHA256 over the notification URL + raw body, base64 (pure).

Square signs each notification with the subscription's signature key and sends the result in the
``x-square-hmacsha256-signature`` header. The signed message is the notification URL exactly as
registered with Square followed by the raw request body, so the URL is configured rather than
taken from the request (behind a reverse proxy the request's own URL differs). Several keys can be
valid at once so a key can be rotated without downtime; every configured key is tried, and each
comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from syncd.errors import SignatureError

SIGNATURE_HEADER = "x-square-hmacsha256-signature"

MISSING = "missing_signature"
MISMATCH = "bad_signature"


def sign(key: str | bytes, notification_url: str, body: bytes) -> str:
    """The header value Square sends for ``body`` delivered to ``notification_url``."""
    raw_key = key.encode() if isinstance(key, str) else key
    digest = hmac.new(raw_key, notification_url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class SignatureVerifier:
    """Checks signatures against one notification URL and one or more keys.

    The HMAC state after absorbing the URL is computed once per key, so a request costs one
    ``copy()`` and one pass over its body per key.
    """

    __slots__ = ("_prefixed", "notification_url")

    def __init__(self, keys: Sequence[str | bytes], notification_url: str) -> None:
        if not keys:
            raise ValueError("at least one signature key is required")
        if not notification_url:
            raise ValueError("the notification URL is required")
        self.notification_url = notification_url
        url = notification_url.encode()
        self._prefixed = tuple(
            hmac.new(k.encode() if isinstance(k, str) else k, url, hashlib.sha256) for k in keys
        )

    def verify(self, header: str | None, body: bytes) -> None:
        """Return if ``header`` is a valid signature of ``body`` by any key; else SignatureError.

        Every key is tried even after a match, so the time taken does not say which key matched.
        """
        if not header:
            raise SignatureError("missing signature header", op="webhook.verify", reason=MISSING)
        given = header.strip().encode("utf-8", "replace")
        ok = False
        for prefixed in self._prefixed:
            mac = prefixed.copy()
            mac.update(body)
            ok |= hmac.compare_digest(base64.b64encode(mac.digest()), given)
        if not ok:
            raise SignatureError(
                "signature does not match any configured key", op="webhook.verify", reason=MISMATCH
            )
