"""Tests for syncd.config: sources and their priority, validation errors, secrets, docs coverage."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from syncd.config import (
    AdminSettings,
    JobProviderSettings,
    Settings,
    SourceSettings,
    TcpAddress,
    UnixAddress,
    describe_settings,
    load_settings,
    redacted,
    require_upstream_credentials,
)
from syncd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "syncd.example.toml"
DOCS = ROOT / "docs" / "config.md"
TOKEN = "tok-very-secret-123"


@pytest.fixture(name="write_toml")
def fixture_write_toml(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: write TOML text to a fresh file and return its path."""
    counter = iter(range(1000))

    def write(text: str) -> Path:
        path = tmp_path / f"syncd-{next(counter)}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(name="secrets")
def fixture_secrets(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write secret files (name -> content) into a fresh directory and return it."""

    def make(**files: str) -> Path:
        directory = tmp_path / "credentials"
        directory.mkdir(exist_ok=True)
        for name, content in files.items():
            (directory / name).write_text(content, encoding="utf-8")
        return directory

    return make


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, tuple[str, str]]:
    """The (key -> (value, why)) of a ConfigError, asserting one entry per key."""
    keys = [key for key, _, _ in exc.value.problems]
    assert len(keys) == len(set(keys)), keys
    return {key: (value, why) for key, value, why in exc.value.problems}


# --- sources and priority ----------------------------------------------------------------------


def test_defaults() -> None:
    """With no file, environment or secrets, every key has its documented default."""
    settings = load_settings(env={})
    assert settings.database == Path("syncd.db")
    assert settings.shutdown_timeout == 10
    assert list(settings.sources) == ["square"]
    assert settings.sources["square"].base_url == "https://connect.squareup.com"
    assert settings.sources["square"].access_token is None
    assert settings.sources["square"].page_limit == 1000
    assert settings.sources["square"].location_ids == []
    assert settings.http.listen == "127.0.0.1:8787"
    assert settings.admin.address == TcpAddress("127.0.0.1", 8788)
    assert settings.jobs.providers == {}
    assert settings.publish.redis.url is None
    assert settings.log.level == "info"
    assert settings.log.format == "auto"


def test_toml_file_loads(write_toml: Callable[[str], Path]) -> None:
    """Values from the TOML file replace defaults; untouched keys keep theirs."""
    path = write_toml(
        """
        database = "/srv/mirror.db"
        [square]
        page_limit = 250
        location_ids = ["L1", "L2"]
        [jobs.providers.seed0]
        dialect = "inventory_jobs"
        base_url = "http://127.0.0.1:9000/"
        params = { tenant = "acme" }
        [log]
        level = "DEBUG"
        """
    )
    settings = load_settings(path, env={})
    assert settings.database == Path("/srv/mirror.db")
    assert settings.sources["square"].page_limit == 250
    assert settings.sources["square"].location_ids == ["L1", "L2"]
    assert settings.sources["square"].overlap == 120
    provider = settings.jobs.providers["seed0"]
    assert provider == JobProviderSettings(
        dialect="inventory_jobs", base_url="http://127.0.0.1:9000", params={"tenant": "acme"}
    )
    assert settings.log.level == "debug"


def test_urls_base_trimmed_notification_exact() -> None:
    """Base URLs lose a trailing slash; the notification URL is kept exactly (it is signed)."""
    env = {
        "SYNCD_SQUARE__BASE_URL": "http://127.0.0.1:8080/",
        "SYNCD_SQUARE__NOTIFICATION_URL": "https://hooks.example.com/webhooks/square/",
    }
    settings = load_settings(env=env)
    assert settings.sources["square"].base_url == "http://127.0.0.1:8080"
    assert (
        settings.sources["square"].notification_url == "https://hooks.example.com/webhooks/square/"
    )


def test_syncd_config_env_names_the_file(write_toml: Callable[[str], Path]) -> None:
    """Without an explicit path, SYNCD_CONFIG names the TOML file; an explicit path wins."""
    from_env = write_toml("[square]\npage_limit = 11\n")
    explicit = write_toml("[square]\npage_limit = 22\n")
    assert load_settings(env={"SYNCD_CONFIG": str(from_env)}).sources["square"].page_limit == 11
    settings = load_settings(explicit, env={"SYNCD_CONFIG": str(from_env)})
    assert settings.sources["square"].page_limit == 22


def test_env_overrides_toml(write_toml: Callable[[str], Path]) -> None:
    """An environment variable beats the file for its key only; sections merge key by key."""
    path = write_toml('[square]\npage_limit = 250\nname = "fromfile"\n')
    settings = load_settings(path, env={"SYNCD_SQUARE__PAGE_LIMIT": "500"})
    assert settings.sources["fromfile"].page_limit == 500
    assert list(settings.sources) == ["fromfile"]


def test_env_merges_into_the_files_source_table(write_toml: Callable[[str], Path]) -> None:
    """`SYNCD_SOURCES__SQUARE__POLL_INTERVAL=30` changes that one key of [sources.square]: the
    upper-case name in the variable is the table's (source names are lower case), so the rest of
    the table stays (it used to be dropped: default base_url, no token)."""
    path = write_toml(
        '[sources.square]\nbase_url = "https://connect.squareupsandbox.com"\n'
        'access_token = "from-file"\npoll_interval = 10\n'
    )
    settings = load_settings(path, env={"SYNCD_SOURCES__SQUARE__POLL_INTERVAL": "30"})
    source = settings.sources["square"]
    assert source.poll_interval == 30
    assert source.base_url == "https://connect.squareupsandbox.com"
    assert source.access_token is not None
    assert source.access_token.get_secret_value() == "from-file"
    assert list(settings.sources) == ["square"]


def test_env_and_secrets_merge_into_sources_in_any_form(
    write_toml: Callable[[str], Path], secrets: Callable[..., Path]
) -> None:
    """A name's case never splits a source, and a [[sources]] list in the file merges with the
    environment and credential files by each table's name (it used to be replaced whole)."""
    path = write_toml(
        '[[sources]]\nname = "acme"\nbase_url = "http://127.0.0.1:9001"\npage_limit = 10\n'
        '[[sources]]\nname = "bobs"\nbase_url = "http://127.0.0.1:9002"\n'
    )
    directory = secrets(**{"sources.Acme.access_token": TOKEN})
    settings = load_settings(
        path,
        env={"SYNCD_SOURCES__ACME__PAGE_LIMIT": "20", "SYNCD_SOURCES__acme__OVERLAP": "5"},
        secrets_dir=directory,
    )
    assert sorted(settings.sources) == ["acme", "bobs"]
    acme = settings.sources["acme"]
    assert acme.base_url == "http://127.0.0.1:9001"
    assert (acme.page_limit, acme.overlap) == (20, 5)
    assert acme.access_token is not None
    assert acme.access_token.get_secret_value() == TOKEN
    assert settings.sources["bobs"].base_url == "http://127.0.0.1:9002"


def test_a_bad_sources_list_is_still_reported_with_an_env_override(
    write_toml: Callable[[str], Path],
) -> None:
    """A [[sources]] table without a name stays an error when the environment also sets a source."""
    path = write_toml('[[sources]]\nbase_url = "http://127.0.0.1:9001"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={"SYNCD_SOURCES__ACME__PAGE_LIMIT": "20"})
    assert "every [[sources]] table needs a name" in str(exc.value)


def test_nested_env_lists_and_maps() -> None:
    """Nested env names use __; lists and tables are JSON; names you choose keep their case."""
    env = {
        "SYNCD_SQUARE__LOCATION_IDS": '["A","B"]',
        "syncd_square__states": '["IN_STOCK"]',
        "SYNCD_DATABASE": "/data/x.db",
        "SYNCD_JOBS__PROVIDERS__Seed_0__DIALECT": "commerce_jobs",
        "SYNCD_JOBS__PROVIDERS__Seed_0__BASE_URL": "https://jobs.example.com",
        "SYNCD_JOBS__PROVIDERS__Seed_0__PARAMS": '{"locationId": "L1"}',
        "SYNCD_JOBS__PROVIDERS__Seed_0__PARAMS__pageSize": "50",
        "SYNCD_PUBLISH__REDIS__URL": "redis://localhost:6379/0",
        "SYNCD_SOMETHING_ELSE": "ignored: not a key of ours",
        "SYNCD_SQUARE__CLOCK_MARGIN": "",
    }
    settings = load_settings(env=env)
    assert settings.sources["square"].location_ids == ["A", "B"]
    assert settings.sources["square"].states == ["IN_STOCK"]
    assert settings.database == Path("/data/x.db")
    provider = settings.jobs.providers["Seed_0"]
    assert provider.dialect == "commerce_jobs"
    assert provider.params == {"locationId": "L1", "pageSize": "50"}
    assert settings.publish.redis.url is not None
    assert settings.publish.redis.url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.sources["square"].clock_margin == 2  # an empty variable counts as unset


def test_secrets_dir_overrides_env(secrets: Callable[..., Path]) -> None:
    """A secret file beats the environment; dotted and __ names both work; newline stripped."""
    directory = secrets(**{"square.access_token": TOKEN + "\n", "admin__token": "adm\n"})
    env = {"SYNCD_SQUARE__ACCESS_TOKEN": "from-env", "SYNCD_ADMIN__TOKEN": "from-env"}
    settings = load_settings(env=env, secrets_dir=directory)
    assert settings.sources["square"].access_token is not None
    assert settings.sources["square"].access_token.get_secret_value() == TOKEN
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == "adm"


def test_credentials_directory_is_the_default_secrets_dir(secrets: Callable[..., Path]) -> None:
    """$CREDENTIALS_DIRECTORY (systemd LoadCredential=) is read when no secrets_dir is given."""
    directory = secrets(**{"square.access_token": TOKEN, "tls.crt": "not ours", ".hidden": "x"})
    settings = load_settings(env={"CREDENTIALS_DIRECTORY": str(directory)})
    assert settings.sources["square"].access_token == SecretStr(TOKEN)


def test_secret_list_one_per_line_or_json(secrets: Callable[..., Path]) -> None:
    """A list-valued secret file takes one item per line, or a JSON array."""
    lines = secrets(**{"square.webhook_signature_keys": "new-key\nold-key\n"})
    keys = load_settings(env={}, secrets_dir=lines).sources["square"].webhook_signature_keys
    assert [k.get_secret_value() for k in keys] == ["new-key", "old-key"]
    (lines / "square.webhook_signature_keys").write_text('["a", "b"]')
    keys = load_settings(env={}, secrets_dir=lines).sources["square"].webhook_signature_keys
    assert [k.get_secret_value() for k in keys] == ["a", "b"]


def test_overrides_beat_everything(secrets: Callable[..., Path]) -> None:
    """Overrides (CLI flags) have the highest priority and are validated like the rest."""
    directory = secrets(**{"database": "/from/secret.db"})
    settings = load_settings(
        env={"SYNCD_DATABASE": "/from/env.db"},
        secrets_dir=directory,
        overrides={"database": "/from/flag.db", "square": {"page_limit": 7}},
    )
    assert settings.database == Path("/from/flag.db")
    assert settings.sources["square"].page_limit == 7
    with pytest.raises(ConfigError) as exc:
        load_settings(env={}, overrides={"square": {"page_limit": 0}})
    assert list(problems(exc)) == ["square.page_limit"]


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """env=None means the real process environment."""
    monkeypatch.setenv("SYNCD_SQUARE__PAGE_LIMIT", "42")
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_settings().sources["square"].page_limit == 42


def test_direct_construction_is_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings(**kwargs) uses only kwargs and defaults, never the environment."""
    monkeypatch.setenv("SYNCD_SQUARE__PAGE_LIMIT", "42")
    settings = Settings(square={"page_limit": 5})  # type: ignore[arg-type]
    assert settings.sources["square"].page_limit == 5
    assert Settings().sources["square"].page_limit == 1000


# --- database and paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("/var/lib/syncd", "/var/lib/syncd/syncd.db"),
        ("/var/lib/syncd:/var/lib/other", "/var/lib/syncd/syncd.db"),
        ("", "syncd.db"),
    ],
)
def test_database_default_follows_state_directory(state: str, expected: str) -> None:
    """STATE_DIRECTORY (first of several) decides the default database; else ./syncd.db."""
    assert load_settings(env={"STATE_DIRECTORY": state}).database == Path(expected)


def test_explicit_database_beats_state_directory(write_toml: Callable[[str], Path]) -> None:
    """A database set in the file wins over the STATE_DIRECTORY default."""
    path = write_toml('database = "/srv/x.db"\n')
    settings = load_settings(path, env={"STATE_DIRECTORY": "/var/lib/syncd"})
    assert settings.database == Path("/srv/x.db")


def test_download_dir_is_relative_to_the_database() -> None:
    """A relative jobs.download_dir resolves next to the database; an absolute one stays."""
    settings = load_settings(env={"SYNCD_DATABASE": "/var/lib/syncd/syncd.db"})
    assert settings.resolved_download_dir() == Path("/var/lib/syncd/downloads")
    settings = load_settings(env={"SYNCD_JOBS__DOWNLOAD_DIR": "/srv/dl"})
    assert settings.resolved_download_dir() == Path("/srv/dl")


# --- listen addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("/run/syncd/admin.sock", UnixAddress(Path("/run/syncd/admin.sock"))),
        ("unix:/run/syncd/admin.sock", UnixAddress(Path("/run/syncd/admin.sock"))),
        ("127.0.0.1:0", TcpAddress("127.0.0.1", 0)),
        ("[::1]:8788", TcpAddress("::1", 8788)),
        ("localhost:9000", TcpAddress("localhost", 9000)),
    ],
)
def test_admin_listen_forms(listen: str, expected: TcpAddress | UnixAddress) -> None:
    """admin.listen takes host:port, [v6]:port, an absolute socket path or unix:/path."""
    settings = load_settings(env={"SYNCD_ADMIN__LISTEN": listen})
    assert settings.admin.address == expected


@pytest.mark.parametrize(
    "listen", ["unix:relative.sock", "localhost", "1.2.3.4:99999", "::1:80", ""]
)
def test_admin_listen_rejects_bad_forms(listen: str) -> None:
    """A relative socket path, a missing or out-of-range port, or bare IPv6 is an error."""
    with pytest.raises(ConfigError) as exc:
        load_settings(env={}, overrides={"admin": {"listen": listen}})
    assert list(problems(exc)) == ["admin.listen"]


def test_http_listen_is_tcp_only() -> None:
    """http.listen takes [v6]:port but not a unix socket."""
    assert load_settings(env={"SYNCD_HTTP__LISTEN": "[::]:0"}).http.address == TcpAddress("::", 0)
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"SYNCD_HTTP__LISTEN": "/run/syncd.sock"})
    assert list(problems(exc)) == ["http.listen"]


# --- validation errors -------------------------------------------------------------------------


def test_every_bad_key_reported_once(write_toml: Callable[[str], Path]) -> None:
    """Several bad keys at once give one (key, value, why) each, dotted, in plain words."""
    path = write_toml(
        """
        [square]
        page_limit = 0
        page_limt = 5
        [log]
        level = "loud"
        """
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    found = problems(exc)
    assert set(found) == {"square.page_limit", "square.page_limt", "log.level"}
    assert found["square.page_limit"] == ("0", "must be greater than or equal to 1")
    assert found["square.page_limt"] == ("5", "unknown key; did you mean 'page_limit'?")
    assert found["log.level"] == ('"loud"', "must be one of debug, info, warning, error")
    assert "square.page_limit: must be greater than or equal to 1 (got 0)" in str(exc.value)


def test_more_validation_messages(write_toml: Callable[[str], Path]) -> None:
    """URLs, names, dates, providers and nested lists all fail with a precise key."""
    path = write_toml(
        """
        bogus_section = 1
        [square]
        name = "Has Spaces"
        base_url = "ftp://example.com"
        api_version = "2025-13-01"
        location_ids = ["ok", 5]
        [jobs.providers."bad name"]
        dialect = "inventory_jobs"
        base_url = "https://x"
        [jobs.providers.good]
        dialect = "soap"
        """
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    found = problems(exc)
    assert found["bogus_section"][1] == "unknown key"
    assert found["square.name"][1].startswith("must be 1..64 lowercase letters, digits")
    assert found["square.base_url"][1] == "must be an http:// or https:// URL"
    assert found["square.api_version"][1] == "must be a date in the form YYYY-MM-DD"
    assert found["square.location_ids[1]"] == ("5", "must be a valid string")
    assert "provider names" in found["jobs.providers.bad name"][1]
    assert found["jobs.providers.good.base_url"] == ("unset", "required")
    assert found["jobs.providers.good.dialect"][0] == '"soap"'


def test_bad_env_json_is_a_config_error() -> None:
    """A list variable that is not JSON fails validation of that key, not with a traceback."""
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"SYNCD_SQUARE__LOCATION_IDS": "[L1"})
    assert problems(exc)["square.location_ids"] == ('"[L1"', "must be a valid list")


def test_toml_syntax_error_names_file_and_line(write_toml: Callable[[str], Path]) -> None:
    """A TOML syntax error is a ConfigError naming the file and the line."""
    path = write_toml('[square]\npage_limit = 5\nname = "unterminated\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    ((key, value, why),) = exc.value.problems
    assert key == "config_file"
    assert value == f"{path}:3"
    assert why.startswith("TOML syntax error at line 3, column ")
    assert str(path) in str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is a ConfigError, from the argument or SYNCD_CONFIG."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_settings(missing, env={})
    assert exc.value.problems == [("config_file", str(missing), "file not found")]
    with pytest.raises(ConfigError):
        load_settings(env={"SYNCD_CONFIG": str(missing)})


def test_missing_secrets_dir(tmp_path: Path) -> None:
    """A secrets directory that does not exist is a ConfigError naming where it came from."""
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"CREDENTIALS_DIRECTORY": str(tmp_path / "gone")})
    assert exc.value.problems[0][0] == "CREDENTIALS_DIRECTORY"


def test_require_upstream_credentials() -> None:
    """Without square.access_token the real upstream is refused; with one it passes."""
    with pytest.raises(ConfigError) as exc:
        require_upstream_credentials(load_settings(env={}))
    ((key, value, why),) = exc.value.problems
    assert (key, value) == ("sources.square.access_token", "unset")
    assert why.startswith("required to talk to the real upstream")
    require_upstream_credentials(load_settings(env={"SYNCD_SQUARE__ACCESS_TOKEN": TOKEN}))


def test_settings_are_frozen() -> None:
    """The tree cannot be changed after validation."""
    settings = load_settings(env={})
    with pytest.raises(ValidationError):
        settings.sources["square"].page_limit = 5
    with pytest.raises(ValidationError):
        settings.database = Path("x")


# --- secrets never leak ------------------------------------------------------------------------


def _secret_settings(secrets: Callable[..., Path]) -> Settings:
    directory = secrets(
        **{
            "square.access_token": TOKEN,
            "square.webhook_signature_keys": f"{TOKEN}-sig",
            "admin.token": f"{TOKEN}-admin",
            "publish.redis.url": f"redis://:{TOKEN}@localhost/0",
            "jobs.providers.p.token": f"{TOKEN}-job",
        }
    )
    env = {
        "SYNCD_JOBS__PROVIDERS__p__DIALECT": "inventory_jobs",
        "SYNCD_JOBS__PROVIDERS__p__BASE_URL": "https://jobs.example.com",
    }
    return load_settings(env=env, secrets_dir=directory)


def test_repr_and_str_never_leak(secrets: Callable[..., Path]) -> None:
    """repr() and str() of the tree and of each section hide every secret."""
    settings = _secret_settings(secrets)
    for text in (
        repr(settings),
        str(settings),
        repr(settings.sources["square"]),
        str(settings.jobs),
    ):
        assert TOKEN not in text
    assert settings.jobs.providers["p"].token == SecretStr(f"{TOKEN}-job")


def test_redacted_masks_secrets(secrets: Callable[..., Path]) -> None:
    """redacted() is plain JSON with "***" for set secrets and null for unset ones."""
    dump = redacted(_secret_settings(secrets))
    text = json.dumps(dump)
    assert TOKEN not in text
    assert dump["sources"]["square"]["access_token"] == "***"
    assert dump["sources"]["square"]["webhook_signature_keys"] == ["***"]
    assert dump["publish"]["redis"]["url"] == "***"
    assert dump["jobs"]["providers"]["p"]["token"] == "***"
    assert dump["sources"]["square"]["page_limit"] == 1000
    assert redacted(load_settings(env={}))["admin"]["token"] is None


def test_errors_mask_secret_values(secrets: Callable[..., Path]) -> None:
    """A bad secret, or an unknown key that looks like one, shows *** instead of its value."""
    directory = secrets(**{"publish.redis.url": f"http://:{TOKEN}@x/"})
    env = {"SYNCD_SQUARE__ACESS_TOKEN": TOKEN, "SYNCD_SQUARE__WEBHOOK_SIGNATURE_KEYS": "[1]"}
    with pytest.raises(ConfigError) as exc:
        load_settings(env=env, secrets_dir=directory)
    found = problems(exc)
    assert found["publish.redis.url"][0] == "***"
    assert found["square.acess_token"] == ("***", "unknown key; did you mean 'access_token'?")
    assert found["square.webhook_signature_keys[0]"][0] == "***"
    assert TOKEN not in str(exc.value)


# --- docs and the example config ---------------------------------------------------------------


def _example_keys(text: str) -> set[str]:
    """Dotted keys set or shown commented-out (``#key = ...``) in the example TOML."""
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        if match := re.match(r"^#?\[([^\]]+)\]\s*$", line):
            keys.add(match.group(1))  # a table key (source_defaults) is shown by its section
            section = match.group(1) + "."
        elif match := re.match(r"^#?([a-z_]+)\s*=", line):
            keys.add(section + match.group(1))
    return keys


def test_every_key_is_in_the_example_config() -> None:
    """Each leaf of the Settings tree appears in config/syncd.example.toml, set or commented."""
    keys = _example_keys(EXAMPLE.read_text(encoding="utf-8"))
    for doc in describe_settings():
        pattern = re.compile(re.escape(doc.key).replace(re.escape("<name>"), r"[^.]+") + "$")
        assert any(pattern.match(key) for key in keys), f"{doc.key} missing from {EXAMPLE.name}"


def test_every_key_is_in_the_docs() -> None:
    """Each leaf of the Settings tree has a row in docs/config.md with its type and default."""
    text = DOCS.read_text(encoding="utf-8")
    for doc in describe_settings():
        row = f"| `{doc.key}` | {doc.type} | `{doc.default}` |"
        assert row in text, f"docs/config.md lacks (or has a stale) row: {row}"
        assert doc.description, f"{doc.key} has no description="


def test_example_config_loads_to_the_defaults() -> None:
    """The example config loads and sets every key to its default value."""
    assert load_settings(EXAMPLE, env={}) == load_settings(env={})


def test_example_config_optional_values_are_valid(tmp_path: Path) -> None:
    """Uncommenting every optional value in the example still gives a valid config."""
    text = EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "uncommented.toml"
    path.write_text(re.sub(r"(?m)^#(?=[\[a-z])", "", text), encoding="utf-8")
    # Two sources and one change log: the stream must not name {source} (one stream per instance).
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert "use {instance}" in str(exc.value)
    settings = load_settings(path, env={"SYNCD_PUBLISH__REDIS__STREAM": "syncd:changes:{instance}"})
    assert settings.sources["square"].access_token is not None
    assert settings.sources["second-seller"].oauth is not None
    assert settings.jobs.providers["inventory"].dialect == "inventory_jobs"
    assert settings.publish.redis.url is not None
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["jobs"]["providers"]["inventory"]["params"] == {"tenant": "acme"}


def test_every_section_is_documented() -> None:
    """Every section model has a docstring and every field a description (used for docs)."""
    for model in (Settings, SourceSettings, AdminSettings, JobProviderSettings):
        assert model.__doc__
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_a_stream_key_cannot_be_another_streams_claim() -> None:
    """publish.redis.stream must not end in ':owner' (KEY:owner holds the claim on stream KEY,
    issue 11) nor be empty; the {instance} template is fine."""
    for bad in ("syncd:changes:eu-1:owner", " "):
        with pytest.raises(ConfigError) as exc:
            load_settings(env={"SYNCD_PUBLISH__REDIS__STREAM": bad})
        [(key, _, why)] = exc.value.problems
        assert key == "publish.redis.stream"
        assert "owner" in why or "empty" in why
    settings = load_settings(env={"SYNCD_PUBLISH__REDIS__STREAM": "syncd:changes:{instance}"})
    assert settings.publish.redis.stream == "syncd:changes:{instance}"
