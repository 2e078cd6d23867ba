"""Where configuration comes from, named without validating anything (no pydantic here).

The environment's names, which config file and credentials directory ``load_settings`` reads, the
default database path, and whether anything but built-in defaults configures syncd at all. The
read-only commands (``syncd status``, ``counts``, ``sources list``) ask that first: when nothing
does, validation could only return the defaults (with the command line's overrides), so they skip
loading the config tree, pydantic and its models, most of their cold start (issue 13).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SYNCD_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
STATE_ENV = "STATE_DIRECTORY"
DATABASE_NAME = "syncd.db"
DEFAULT_SOURCE = "square"
"""The one source's name when the config names none (and of the legacy ``[square]`` table)."""


def config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """The TOML file to read: ``explicit`` (``--config``), else ``$SYNCD_CONFIG`` when set."""
    if explicit is None and env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return explicit


def secrets_directory(explicit: Path | None, env: Mapping[str, str]) -> tuple[Path, str] | None:
    """The directory of secret files to read, and the key its errors name: ``explicit``, else
    ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``) when set."""
    if explicit is not None:
        return explicit, "secrets_dir"
    if env.get(CREDENTIALS_ENV):
        return Path(env[CREDENTIALS_ENV]), CREDENTIALS_ENV
    return None


def setting_variables(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The ``SYNCD_*`` variables that may set a key (any case; ``SYNCD_CONFIG`` names the file
    instead, and an empty value counts as unset)."""
    return [
        (name, value)
        for name, value in env.items()
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV and value != ""
    ]


def only_defaults(explicit_config: Path | None, env: Mapping[str, str]) -> bool:
    """True when nothing but built-in defaults and the command line configures syncd: no config
    file, no credentials directory, no ``SYNCD_*`` variable. ``load_settings`` then returns the
    defaults with the command line's overrides on top, and cannot fail on them."""
    return (
        config_file(explicit_config, env) is None
        and secrets_directory(None, env) is None
        and not setting_variables(env)
    )


def expand_user(path: Path) -> Path:
    """``~`` and ``~user`` expanded, as every path setting is."""
    return path.expanduser()


def default_database(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY/syncd.db`` (first of several, colon-separated), else ``./syncd.db``."""
    state = env.get(STATE_ENV, "").split(":")[0]
    return Path(state) / DATABASE_NAME if state else Path(DATABASE_NAME)


def defaults_database(override: Path | None, env: Mapping[str, str]) -> Path:
    """The ``database`` setting when :func:`only_defaults` holds: ``override`` (``--database``),
    else the default, ``~`` expanded."""
    return expand_user(override if override is not None else default_database(env))
