"""The configuration tree: one typed, frozen ``Settings`` object, validated once at the edge.

Sources, in rising priority: field defaults < TOML file < ``SYNCD_*`` environment variables <
secret files (``$CREDENTIALS_DIRECTORY``, systemd's ``LoadCredential=``) < explicit overrides (CLI
flags). Every validation failure becomes one :class:`~syncd.errors.ConfigError` listing
``(key, value, why)`` per bad key, with secret values shown as ``***``. ``docs/config.md`` lists
every key.

Names are imported from their module on first use (PEP 562), not with the package: the models pull
in pydantic, and the read-only commands that find nothing to configure (``syncd.config.inputs``)
never need them (issue 13).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config.docs import FieldDoc, describe_settings, redacted
    from syncd.config.fields import TcpAddress, UnixAddress, parse_listen
    from syncd.config.inputs import DEFAULT_SOURCE, default_database
    from syncd.config.loading import config_error, load_settings, require_upstream_credentials
    from syncd.config.models import (
        AdminSettings,
        ChangelogSettings,
        HttpSettings,
        JobProviderSettings,
        JobsSettings,
        LogSettings,
        OAuthSettings,
        PublishSettings,
        RedisSettings,
        Settings,
        SourceSettings,
        SyncSettings,
        WebhookSettings,
    )

# Public name -> the module of this package that defines it.
_HOMES: dict[str, str] = {
    "FieldDoc": "docs",
    "describe_settings": "docs",
    "redacted": "docs",
    "TcpAddress": "fields",
    "UnixAddress": "fields",
    "parse_listen": "fields",
    "DEFAULT_SOURCE": "inputs",
    "default_database": "inputs",
    "config_error": "loading",
    "load_settings": "loading",
    "require_upstream_credentials": "loading",
    "AdminSettings": "models",
    "ChangelogSettings": "models",
    "HttpSettings": "models",
    "JobProviderSettings": "models",
    "JobsSettings": "models",
    "LogSettings": "models",
    "OAuthSettings": "models",
    "PublishSettings": "models",
    "RedisSettings": "models",
    "Settings": "models",
    "SourceSettings": "models",
    "SyncSettings": "models",
    "WebhookSettings": "models",
}

__all__ = [
    "DEFAULT_SOURCE",
    "AdminSettings",
    "ChangelogSettings",
    "FieldDoc",
    "HttpSettings",
    "JobProviderSettings",
    "JobsSettings",
    "LogSettings",
    "OAuthSettings",
    "PublishSettings",
    "RedisSettings",
    "Settings",
    "SourceSettings",
    "SyncSettings",
    "TcpAddress",
    "UnixAddress",
    "WebhookSettings",
    "config_error",
    "default_database",
    "describe_settings",
    "load_settings",
    "parse_listen",
    "redacted",
    "require_upstream_credentials",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
