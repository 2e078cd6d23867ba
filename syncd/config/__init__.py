"""The configuration tree: one typed, frozen ``Settings`` object, validated once at the edge.

Sources, in rising priority: field defaults < TOML file < ``SYNCD_*`` environment variables <
secret files (``$CREDENTIALS_DIRECTORY``, systemd's ``LoadCredential=``) < explicit overrides (CLI
flags). Every validation failure becomes one :class:`~syncd.errors.ConfigError` listing
``(key, value, why)`` per bad key, with secret values shown as ``***``. ``docs/config.md`` lists
every key.
"""

from syncd.config.docs import FieldDoc, describe_settings, redacted
from syncd.config.fields import TcpAddress, UnixAddress, parse_listen
from syncd.config.loading import config_error, load_settings, require_upstream_credentials
from syncd.config.models import (
    DEFAULT_SOURCE,
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
from syncd.config.sources import default_database

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
