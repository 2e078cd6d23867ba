"""The configuration tree: one frozen pydantic model per section, ``Settings`` at the root."""

from __future__ import annotations

import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from syncd.config.fields import (
    _SECTION,
    BaseUrl,
    Dialect,
    EndpointName,
    Factor,
    InstanceName,
    KindPattern,
    LogFormat,
    LogLevel,
    NonEmpty,
    NonNegative,
    OptionalSecret,
    OutboundUrl,
    Positive,
    ProviderName,
    SourceName,
    TcpAddress,
    UnixAddress,
    UserPath,
    WebhookSecret,
    _admin_listen,
    _api_version,
    _choice,
    _exact_url,
    _redis_url,
    _stream_template,
    _tcp_listen,
    parse_listen,
)
from syncd.config.inputs import DATABASE_NAME, DEFAULT_SOURCE


def _merged(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``defaults``, tables (oauth) merged key by key."""
    out = dict(defaults)
    for key, value in own.items():
        base = out.get(key)
        out[key] = (
            _merged(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
        )
    return out


# A source's own credential replaces the other kind inherited from [source_defaults].
_CREDENTIALS = ("access_token", "oauth")


def _over_defaults(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """One source's table over ``[source_defaults]``."""
    inherited = dict(defaults)
    for mine, other in (_CREDENTIALS, _CREDENTIALS[::-1]):
        if mine in own and other not in own:
            inherited.pop(other, None)
    return _merged(inherited, own)


def normalise_sources(data: dict[str, Any], deprecations: list[str]) -> dict[str, Any]:
    """The raw input's sources as one ``{name: table}``, each over ``[source_defaults]``.

    Accepts ``[sources.NAME]`` tables, a ``[[sources]]`` list whose tables carry ``name``, and the
    legacy ``[square]`` table (one source named by its ``name``, default ``square``). Shapes it cannot
    read are left for validation to report with their key.
    """
    data = dict(data)
    sources = data.get("sources", {})
    if isinstance(sources, list):
        sources = _sources_from_list(sources)
    legacy = data.pop("square", None)
    if isinstance(legacy, dict):
        legacy = dict(legacy)
        name = legacy.pop("name", DEFAULT_SOURCE)
        if sources and (not isinstance(sources, dict) or name not in sources):
            raise ValueError(
                "[square] (deprecated) and [sources] cannot be combined: move the [square] keys"
                " into [sources.NAME] or [source_defaults]"
            )
        # A legacy key next to [sources.<its name>] (e.g. the unit's square.access_token
        # credential after the file moved to [sources.square]) still reaches that source.
        own = sources.get(name, {}) if isinstance(sources, dict) else {}
        sources = {**sources, name: _merged(own, legacy) if isinstance(own, dict) else own}
        deprecations.append(
            f"[square] is deprecated: write it as [sources.{name}] (same keys, without name);"
            f" environment variables SYNCD_SQUARE__* become SYNCD_SOURCES__{str(name).upper()}__*"
        )
    elif legacy is not None:
        data["square"] = legacy  # not a table: validation says so
    if not sources:
        sources = {DEFAULT_SOURCE: {}}
    defaults = data.get("source_defaults", {})
    if isinstance(sources, dict) and isinstance(defaults, dict):
        sources = {
            name: _over_defaults(defaults, own) if isinstance(own, dict) else own
            for name, own in _folded(sources).items()
        }
    data["sources"] = sources
    return data


def _folded(sources: dict[Any, Any]) -> dict[str, Any]:
    """``{name: table}`` with lower-case names (the only kind a source has): tables whose names
    differ only in case are one source's, merged key by key, the later over the earlier."""
    out: dict[str, Any] = {}
    for name, own in sources.items():
        key = str(name).lower()
        prior = out.get(key)
        out[key] = _merged(prior, own) if isinstance(prior, dict) and isinstance(own, dict) else own
    return out


def layers_by_source_name(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input layers (file, environment, secrets, overrides) with ``sources`` in one shape each,
    ``{lower-case name: table}``, so that they merge source by source, key by key:
    ``SYNCD_SOURCES__SQUARE__POLL_INTERVAL`` changes one key of the file's ``[sources.square]``
    instead of standing beside it as ``SQUARE`` and replacing it when names are lowered, and a
    ``[[sources]]`` list merges by each table's name instead of being replaced by the first layer
    that names a source.

    A layer whose list cannot be read (a table without a name, a name twice) keeps the only
    ``sources``: validation then reports it exactly as it does for that layer alone. Other shapes
    are left for validation to report with their key.
    """
    out = [dict(layer) for layer in layers]
    for layer in out:
        sources = layer.get("sources")
        try:
            if isinstance(sources, list):
                sources = _sources_from_list(sources)
        except ValueError:
            for other in out:
                if other is not layer:
                    other.pop("sources", None)
            return out
        if isinstance(sources, dict):
            layer["sources"] = _folded(sources)
    return out


def _sources_from_list(tables: list[Any]) -> dict[str, Any] | list[Any]:
    """``[[sources]]`` tables keyed by their ``name`` (left as a list when one lacks it)."""
    by_name: dict[str, Any] = {}
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            raise ValueError("every [[sources]] table needs a name")
        own = dict(table)
        name = own.pop("name")
        if name in by_name:
            raise ValueError(f"two [[sources]] tables are named {name!r}")
        by_name[name] = own
    return by_name


# --- the tree ------------------------------------------------------------------------------------


class OAuthSettings(BaseModel):
    """OAuth credentials of one seller's authorization of the app (instead of a static token)."""

    model_config = _SECTION

    client_id: str | None = Field(
        default=None, description="The app's OAuth client id (application id)."
    )
    client_secret: OptionalSecret = Field(
        default=None,
        description="The app's OAuth client secret (secret); unset for a PKCE (public) client.",
    )
    refresh_token: OptionalSecret = Field(
        default=None,
        description="The seller's refresh token (secret); used until the token endpoint rotates it"
        " (the rotated one is kept in the database).",
    )
    refresh_after: Positive = Field(
        default=604800,
        description="Seconds after which an access token is refreshed (Square: every 7 days or"
        " sooner); also refreshed a day before it expires (at half its lifetime if shorter than"
        " two days), and once on a 401.",
    )
    alert_after: Positive = Field(
        default=691200,
        description="Age in seconds past which the token age is reported as too old (Square: 8"
        " days): a warning log and syncd_oauth_token_age_seconds.",
    )


class SourceSettings(BaseModel):
    """One upstream source (a Square seller): where to read its counts, with what credentials, and
    how hard to try."""

    model_config = _SECTION
    base_url: BaseUrl = Field(
        default="https://connect.squareup.com",
        description="Base URL of the upstream API (http or https); the simulator's URL in tests.",
    )
    access_token: OptionalSecret = Field(
        default=None,
        description="Static upstream access token (secret); this or oauth is required unless"
        " running the simulator.",
    )
    oauth: OAuthSettings | None = Field(
        default=None,
        description="OAuth credentials (instead of access_token): refreshed access tokens.",
    )
    merchant_id: str | None = Field(
        default=None,
        description="The seller's merchant id, which routes the app's webhooks to this source;"
        " learned from the token endpoint or the locations when unset.",
    )
    api_version: Annotated[str, AfterValidator(_api_version)] = Field(
        default="2025-08-20",
        description="Square-Version header sent with every request (YYYY-MM-DD).",
    )
    location_ids: list[str] = Field(
        default_factory=list,
        description="Location ids to mirror; empty means the seller's active locations,"
        " discovered with ListLocations and looked up again every locations_interval.",
    )
    locations_interval: Positive = Field(
        default=300,
        description="Seconds between lookups of the seller's active locations (with no"
        " location_ids); the locations a catalog pass read less than this ago count as one.",
    )
    states: list[str] = Field(
        default_factory=list,
        description="Inventory states to mirror (e.g. IN_STOCK); empty means every state.",
    )
    catalog_object_ids: list[str] = Field(
        default_factory=list, description="Catalog object ids to mirror; empty means every object."
    )
    page_limit: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Counts (and catalog objects) requested per page (1..1000).",
    )
    overlap: NonNegative = Field(
        default=120,
        description="Seconds a pass re-reads before its stored watermark, to catch late updates.",
    )
    clock_margin: NonNegative = Field(
        default=2,
        description="Seconds subtracted from the upstream Date header to form the next watermark.",
    )
    poll_interval: Positive = Field(
        default=60, description="Seconds between safety-net passes when no webhook triggers one."
    )
    partition_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Partitions (locations) synced in parallel in one pass (1..64).",
    )
    full_resync_interval: Positive = Field(
        default=86400, description="Seconds between full resyncs that ignore the watermark."
    )
    full_resync_after: Positive = Field(
        default=21600,
        description="Partitions whose last good pass is older than this (seconds) resync in full.",
    )
    catalog_sync: bool = Field(
        default=True,
        description="Mirror the catalog (items and variations: SKU, names) and the location"
        " details beside the counts; needs the ITEMS_READ and MERCHANT_PROFILE_READ scopes.",
    )
    catalog_interval: Positive = Field(
        default=300,
        description="Seconds between safety-net catalog passes when no catalog.version.updated"
        " webhook triggers one.",
    )
    catalog_full_interval: Positive = Field(
        default=86400,
        description="Seconds between full catalog passes, which also mark deleted what the"
        " catalog no longer lists.",
    )
    catalog_overlap: NonNegative = Field(
        default=60,
        description="Seconds a catalog pass re-reads before the stored latest_time.",
    )
    request_timeout: Positive = Field(
        default=30, description="Seconds one upstream request may take in total."
    )
    connect_timeout: Positive = Field(
        default=10, description="Seconds allowed to open an upstream connection."
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a retryable upstream failure (0..20)."
    )
    cursor_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Times a cursor chain is read again from its start when the upstream declares "
        "its cursor invalid or expired, before the pass fails (0..100).",
    )
    retry_backoff_initial: NonNegative = Field(
        default=0.5, description="First retry delay, in seconds."
    )
    retry_backoff_factor: Factor = Field(
        default=2, description="Multiplier applied to each next delay."
    )
    retry_backoff_max: NonNegative = Field(
        default=30, description="Cap on one retry delay, in seconds."
    )
    notification_url: Annotated[str | None, AfterValidator(_exact_url)] = Field(
        default=None,
        description="Webhook URL exactly as registered upstream; it is part of the signed payload"
        " (for one URL serving every source: .../webhooks, set in [source_defaults]).",
    )
    webhook_signature_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Webhook signature keys (secrets); list several to rotate keys.",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> SourceSettings:
        if self.access_token is not None and self.oauth is not None:
            raise ValueError("set either access_token or oauth, not both")
        return self


class LegacySquareSettings(SourceSettings):
    """The single ``[square]`` table of syncd <= 0.x: read as ``[sources.<name>]`` (deprecated)."""

    name: SourceName = Field(default=DEFAULT_SOURCE, description="Source name.")


class SyncSettings(BaseModel):
    """Scheduling of the passes of every source."""

    model_config = _SECTION

    max_concurrent_passes: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Passes (of different sources) running at once; the others wait their turn"
        " in arrival order.",
    )
    max_failing_passes: int = Field(
        default=2,
        ge=1,
        le=1024,
        description="Passes of sources whose last pass failed, running at once on slots of their"
        " own, so failing or stalled sources never hold the slots of healthy ones.",
    )


class HttpSettings(BaseModel):
    """The public listener: webhooks, health checks and metrics."""

    model_config = _SECTION

    listen: Annotated[str, AfterValidator(_tcp_listen)] = Field(
        default="127.0.0.1:8787", description="Public listener address: host:port or [v6]:port."
    )
    max_body_bytes: int = Field(
        default=1048576,
        ge=1,
        description="Largest webhook body accepted, in bytes; larger gets 413.",
    )
    read_timeout: Positive = Field(
        default=10,
        description="Seconds a client may take to send a whole request (headers and body); a"
        " slower one gets 408 or is disconnected, and so is a connection idle this long.",
    )
    ready_max_staleness: Positive = Field(
        default=600,
        description="/readyz fails, and the change log gets a source.stale entry, when a"
        " source's last good pass is older than this (seconds).",
    )

    @property
    def address(self) -> TcpAddress:
        """The parsed listen address."""
        parsed = parse_listen(self.listen)
        assert isinstance(parsed, TcpAddress)
        return parsed


class WebhookSettings(BaseModel):
    """How webhooks turn into sync passes, and how long their records are kept."""

    model_config = _SECTION

    debounce: NonNegative = Field(
        default=0.1, description="Seconds to wait for more webhooks before starting a pass."
    )
    max_delay: NonNegative = Field(
        default=0.5, description="Most seconds between the first pending webhook and its pass."
    )
    group_commit_window: NonNegative = Field(
        default=0.002, description="Seconds webhook inserts wait to share one commit."
    )
    retain_days: NonNegative = Field(
        default=7,
        description="Days processed webhook events are kept (deduplication) before pruning.",
    )
    apply_counts: bool = Field(
        default=True,
        description="Apply the counts an inventory.count.updated webhook carries at once (the fast"
        " path), under the same stale-write guard as a pass; the pass it triggers then confirms"
        " them. false: a webhook only triggers a pass.",
    )


class AdminSettings(BaseModel):
    """The admin API (jobs, status, sync now), on its own local listener."""

    model_config = _SECTION

    listen: Annotated[str, AfterValidator(_admin_listen)] = Field(
        default="127.0.0.1:8788",
        description="Admin listener: host:port, [v6]:port, an absolute socket path or unix:/path.",
    )
    token: OptionalSecret = Field(
        default=None,
        description="Bearer token the admin API requires (secret); unset: keep the listener local.",
    )

    @property
    def address(self) -> TcpAddress | UnixAddress:
        """The parsed listen address (TCP or unix socket)."""
        return parse_listen(self.listen, allow_unix=True)


class JobProviderSettings(BaseModel):
    """One asynchronous job API that syncd polls until the job finishes."""

    model_config = _SECTION

    dialect: Dialect = Field(description="Job API dialect this provider speaks.")
    base_url: BaseUrl = Field(description="Base URL of the provider's job API.")
    token: OptionalSecret = Field(
        default=None, description="Bearer token for the provider (secret)."
    )
    path: str | None = Field(
        default=None,
        description="Job status path template ({job_id} or the dialect's own name for the id,"
        " other {placeholders} from params); the dialect's default when unset.",
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Default path parameters (e.g. businessUnitId; a job's own params win); keys"
        " the path does not use are sent as query parameters.",
    )
    concurrency: int = Field(
        default=4, ge=1, description="Polls in flight at once for this provider."
    )
    rate_per_second: float = Field(
        default=5, gt=0, description="Polls per second for this provider."
    )


class JobsSettings(BaseModel):
    """Polling of registered upstream jobs, and where their downloads go."""

    model_config = _SECTION

    backoff_initial: NonNegative = Field(
        default=1, description="First delay between polls of a job, seconds."
    )
    backoff_factor: Factor = Field(
        default=2, description="Multiplier applied to each next poll delay."
    )
    backoff_max: NonNegative = Field(
        default=300, description="Cap on the delay between polls, seconds."
    )
    deadline: Positive = Field(
        default=86400, description="Seconds after registration when an unfinished job is given up."
    )
    not_found_grace: NonNegative = Field(
        default=300, description="Seconds a new job may answer 404 before that counts as a failure."
    )
    request_timeout: Positive = Field(
        default=30, description="Seconds one request to a job provider may take in total."
    )
    connect_timeout: Positive = Field(
        default=10, description="Seconds allowed to open a connection to a job provider."
    )
    download_dir: UserPath = Field(
        default=Path("downloads"),
        description="Where export downloads go; relative to the database's directory.",
    )
    max_download_bytes: int = Field(
        default=104857600, ge=1, description="Largest download accepted, in bytes."
    )
    providers: dict[ProviderName, JobProviderSettings] = Field(
        default={}, description="Job providers by name ([A-Za-z0-9_-]+)."
    )


class ChangelogSettings(BaseModel):
    """Retention of the append-only change log, and its heartbeats."""

    model_config = _SECTION

    retain_days: NonNegative = Field(
        default=0, description="Days of changes to keep; 0 keeps them forever."
    )
    retain_max_rows: int = Field(
        default=0, ge=0, description="Most change rows kept; 0 is unlimited."
    )
    prune_interval: Positive = Field(
        default=600, description="Seconds between retention rounds (when a limit is set)."
    )
    heartbeat_interval: NonNegative = Field(
        default=30,
        description="Seconds of silence after which a heartbeat entry is written; 0 turns"
        " heartbeats off.",
    )


class RedisSettings(BaseModel):
    """Publishing changes to a Redis stream."""

    model_config = _SECTION

    url: Annotated[OptionalSecret, AfterValidator(_redis_url)] = Field(
        default=None,
        description="Redis URL (secret: may hold a password); publishing is off when unset.",
    )
    stream: Annotated[str, AfterValidator(_stream_template)] = Field(
        default="syncd:changes:{source}",
        description="Stream key; {instance} becomes the instance name, {source} the source"
        " name (only with one source: the stream carries the one change log of all sources)."
        " One database per stream: the relay claims it in KEY:owner.",
    )
    maxlen: int = Field(
        default=0, ge=0, description="Approximate stream MAXLEN; 0 means no trimming."
    )
    batch_size: int = Field(default=500, ge=1, description="Changes sent per round trip.")
    timeout: Positive = Field(
        default=5, description="Seconds to connect to Redis, and to wait for each reply."
    )
    retry_backoff_initial: Positive = Field(
        default=0.5, description="First delay before retrying after a Redis failure, in seconds."
    )
    retry_backoff_max: Positive = Field(
        default=30, description="Cap on the delay between retries while Redis fails, in seconds."
    )


class PublishSettings(BaseModel):
    """Where changes are published besides the local change log."""

    model_config = _SECTION

    redis: RedisSettings = Field(
        default_factory=RedisSettings, description="Redis stream publishing."
    )


class OutboundSettings(BaseModel):
    """One outbound webhook endpoint: syncd POSTs the change log to it in signed batches, in
    order, and keeps its position (docs/changelog.md, "Outbound webhooks")."""

    model_config = _SECTION

    url: OutboundUrl = Field(description="Where batches are POSTed: an http:// or https:// URL.")
    secret: WebhookSecret = Field(
        description="Standard Webhooks signing secret (secret): whsec_ + base64 of 24..64 random"
        " bytes; the receiver verifies webhook-signature with it."
    )
    kinds: list[KindPattern] = Field(
        default=[],
        description="Entry kinds to deliver, as kinds or globs (count.*, job.*); empty: all.",
    )
    sources: list[NonEmpty] = Field(
        default=[],
        description="Sources whose entries to deliver (a job entry's source is its provider);"
        " empty: all.",
    )
    batch_size: int = Field(default=100, ge=1, le=1000, description="Most entries per POST.")
    timeout: Positive = Field(
        default=10, description="Seconds one POST may take in total (connect included)."
    )
    backoff_initial: Positive = Field(
        default=1, description="Most seconds before the first retry (full jitter)."
    )
    max_backoff: Positive = Field(
        default=300, description="Cap on the delay between retries, seconds (Retry-After wins)."
    )
    disable_after: NonNegative = Field(
        default=86400,
        description="Seconds of failing without a break after which the endpoint is disabled;"
        " 0: never.",
    )
    start: Literal["oldest", "head"] = Field(
        default="oldest",
        description="Where a new endpoint starts: oldest (every retained entry) or head (entries"
        " committed from its first start on).",
    )


class LogSettings(BaseModel):
    """Log level and output format."""

    model_config = _SECTION

    level: Annotated[LogLevel, _choice("debug", "info", "warning", "error")] = Field(
        default="info", description="Lowest level logged: debug, info, warning or error (any case)."
    )
    format: Annotated[LogFormat, _choice("auto", "json", "console")] = Field(
        default="auto",
        description="json, console, or auto (console on a terminal, JSON otherwise).",
    )


_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "syncd_config_sources", default=()
)


class Settings(BaseSettings):
    """Everything syncd can be configured with. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    database: UserPath = Field(
        default=Path(DATABASE_NAME),
        description="SQLite database file: the mirror, the change log and sync state.",
        json_schema_extra={"doc_default": "$STATE_DIRECTORY/syncd.db, else ./syncd.db"},
    )
    shutdown_timeout: NonNegative = Field(
        default=10, description="Seconds a graceful shutdown may take before tasks are cancelled."
    )
    instance: InstanceName = Field(
        default=None,
        description="Name of this syncd instance ({instance} in publish.redis.stream); when unset,"
        " the host name.",
    )
    sources: dict[SourceName, SourceSettings] = Field(
        default={},
        description="The upstream sources (sellers) by name; [sources.NAME] tables, or a"
        " [[sources]] list with a name each. Unset: one source named square.",
        json_schema_extra={"doc_default": '{"square": {}}'},
    )
    source_defaults: SourceSettings = Field(
        default_factory=SourceSettings,
        description="Keys every source takes unless it sets them itself (e.g. base_url, the"
        " app's oauth client and webhook signature keys).",
        json_schema_extra={"doc_as": "sources.<name>"},
    )
    square: LegacySquareSettings | None = Field(
        default=None,
        description="Deprecated: the single source of older versions; read as [sources.NAME].",
        json_schema_extra={"legacy": True},
    )
    sync: SyncSettings = Field(default_factory=SyncSettings, description="Pass scheduling.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The public listener.")
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings, description="Webhook handling."
    )
    admin: AdminSettings = Field(default_factory=AdminSettings, description="The admin API.")
    jobs: JobsSettings = Field(default_factory=JobsSettings, description="Upstream job polling.")
    changelog: ChangelogSettings = Field(
        default_factory=ChangelogSettings, description="Change log retention."
    )
    publish: PublishSettings = Field(
        default_factory=PublishSettings, description="Change publishing."
    )
    outbound: dict[EndpointName, OutboundSettings] = Field(
        default={},
        description="Outbound webhook endpoints by name ([outbound.NAME]): each a named consumer"
        " of the change log.",
    )
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(**kwargs) stays pure (kwargs + defaults, no os.environ): only load_settings()
        # adds the file, environment and secret sources, for the duration of one construction.
        return (init_settings, *_LOAD_SOURCES.get())

    @model_validator(mode="wrap")
    @classmethod
    def _sources_from_input(
        cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
    ) -> Settings:
        deprecations: list[str] = []
        if isinstance(data, dict):
            data = normalise_sources(data, deprecations)
        settings = handler(data)
        settings._deprecations = tuple(deprecations)
        return settings

    @model_validator(mode="after")
    def _one_stream_for_all_sources(self) -> Settings:
        redis = self.publish.redis
        if redis.url is not None and "{source}" in redis.stream and len(self.sources) > 1:
            raise ValueError(
                f"publish.redis.stream {redis.stream!r} names {{source}}, but there are"
                f" {len(self.sources)} sources and one change log: use {{instance}}"
                " (e.g. syncd:changes:{instance})"
            )
        return self

    def instance_name(self) -> str:
        """``instance``, else the host name: what ``{instance}`` becomes."""
        return self.instance or socket.gethostname()

    @property
    def deprecations(self) -> tuple[str, ...]:
        """One line per deprecated form the input used (logged at start, shown by config check)."""
        return self._deprecations

    def resolved_download_dir(self) -> Path:
        """``jobs.download_dir``; a relative path is taken relative to the database's directory."""
        if self.jobs.download_dir.is_absolute():
            return self.jobs.download_dir
        return self.database.parent / self.jobs.download_dir
