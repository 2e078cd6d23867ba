"""Loading settings once, at the edge, and turning validation errors into one (key, value, why) per
bad key."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import (
    BaseModel,
    SecretStr,
    ValidationError,
)

from syncd.config import inputs
from syncd.config.fields import SECRET_MASK
from syncd.config.inputs import DEFAULT_SOURCE, default_database
from syncd.config.models import _LOAD_SOURCES, Settings, layers_by_source_name
from syncd.config.sources import (
    _env_data,
    _is_model,
    _MappingSource,
    _read_toml,
    _secrets_data,
    _unwrap,
)
from syncd.errors import ConfigError

# --- loading and errors --------------------------------------------------------------------------


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read every source and validate once; raise :class:`ConfigError` listing every bad key.

    ``env=None`` reads ``os.environ``; tests pass a dict. ``config_file`` defaults to
    ``$SYNCD_CONFIG`` and ``secrets_dir`` to ``$CREDENTIALS_DIRECTORY`` when those are set.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    config_file = inputs.config_file(config_file, environ)
    secrets = inputs.secrets_directory(secrets_dir, environ)

    layers = layers_by_source_name(
        [  # highest priority first, as pydantic-settings expects
            dict(overrides or {}),
            _secrets_data(*secrets) if secrets else {},
            _env_data(environ),
            _read_toml(config_file) if config_file else {},
            {"database": default_database(environ)},
        ]
    )
    names = ("overrides", "secrets", "environment", "toml", "defaults")
    sources = tuple(
        _MappingSource(Settings, data, name) for name, data in zip(names, layers, strict=True)
    )
    token = _LOAD_SOURCES.set(sources)
    try:
        return Settings()
    except ValidationError as exc:
        raise config_error(exc, legacy_source=_legacy_source(layers)) from None
    finally:
        _LOAD_SOURCES.reset(token)


def _annotation_at(loc: tuple[str | int, ...]) -> tuple[Any, type[BaseModel] | None]:
    """The annotation at an error location, and the model that holds its last key."""
    annotation: Any = Settings
    parent: type[BaseModel] | None = None
    for part in loc:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            parent = annotation
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        elif get_origin(annotation) in (list, dict):
            parent = None
            annotation = get_args(annotation)[-1]
        else:
            return None, None
    return annotation, parent


def _contains_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_contains_secret(arg) for arg in get_args(annotation))


def _looks_secret(name: str, parent: type[BaseModel] | None) -> bool:
    """An unknown key may be a misspelt secret: mask it when it looks like one."""
    if any(word in name.lower() for word in ("token", "secret", "password", "key", "url")):
        return True
    if parent is None:
        return False
    close = difflib.get_close_matches(name, list(parent.model_fields), 1)
    return bool(close) and _contains_secret(parent.model_fields[close[0]].annotation)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _why(error: Mapping[str, Any], key: str, parent: type[BaseModel] | None) -> str:
    kind, message = error["type"], str(error["msg"])
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        why = "unknown key"
        if parent is not None:
            close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(parent.model_fields), 1)
            why += f"; did you mean {close[0]!r}?" if close else ""
        return why
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table (a [section] in TOML)"
    message = message.removeprefix("Value error, ")
    return re.sub(r"^Input should be ", "must be ", message)


def _legacy_source(layers: Iterable[Mapping[str, Any]]) -> str | None:
    """The source name a legacy ``[square]`` table became (its ``name``, else the default)."""
    found: str | None = None
    for data in layers:
        table = data.get("square")
        if isinstance(table, Mapping):
            name = table.get("name")
            found = found or (str(name).lower() if isinstance(name, str) else None)
            found = found or DEFAULT_SOURCE
    return found


def _shown(loc: tuple[str | int, ...], legacy_source: str | None) -> tuple[str | int, ...]:
    """The key as the operator wrote it: ``sources.<name>.X`` is ``square.X`` when the input
    used the legacy table (and ``sources.<name>`` itself, a bad name, is ``square.name``)."""
    if legacy_source is None or loc[:2] != ("sources", legacy_source):
        return loc
    return ("square", *loc[2:]) if loc[2:] else ("square", "name")


def config_error(exc: ValidationError, *, legacy_source: str | None = None) -> ConfigError:
    """Turn a pydantic ValidationError into one (key, value, why) per bad key, secrets masked."""
    problems: dict[str, tuple[str, list[str]]] = {}
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "[key]")
        shown = _shown(loc, legacy_source)
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in shown).lstrip(".")
        annotation, parent = _annotation_at(loc)
        if error["type"] == "missing":
            value = "unset"
        elif _contains_secret(annotation) or (
            error["type"] == "extra_forbidden" and _looks_secret(str(loc[-1]), parent)
        ):
            value = SECRET_MASK
        elif isinstance(error["input"], dict):
            value = "(table)"  # a whole table may hold secrets; the key is what matters
        else:
            value = _show(error["input"])
        why = _why(error, key, parent)
        if error["type"] == "missing" and _contains_secret(annotation):
            why += f" (a secret: best in a credential file named {key}, see docs/config.md)"
        _, whys = problems.setdefault(key or "(root)", (value, []))
        if why not in whys:
            whys.append(why)
    return ConfigError([(key, value, "; ".join(whys)) for key, (value, whys) in problems.items()])


def require_upstream_credentials(settings: Settings) -> None:
    """Raise ConfigError unless every source has a static token or a usable OAuth grant (the
    simulator needs none)."""
    problems: list[tuple[str, str, str]] = []
    for name, source in settings.sources.items():
        key = f"sources.{name}"
        if source.oauth is not None:
            if not source.oauth.client_id:
                problems.append((f"{key}.oauth.client_id", "unset", "required with oauth"))
            if source.oauth.refresh_token is None:
                problems.append(
                    (
                        f"{key}.oauth.refresh_token",
                        "unset",
                        f"required with oauth; set SYNCD_SOURCES__{name.upper()}__OAUTH__"
                        f"REFRESH_TOKEN or a {key}.oauth.refresh_token credential file",
                    )
                )
        elif source.access_token is None:
            problems.append(
                (
                    f"{key}.access_token",
                    "unset",
                    f"required to talk to the real upstream (or {key}.oauth); set SYNCD_SOURCES__"
                    f"{name.upper()}__ACCESS_TOKEN or a {key}.access_token credential file, or"
                    " run against the simulator",
                )
            )
    if problems:
        raise ConfigError(problems)
