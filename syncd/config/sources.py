"""Where settings come from: the TOML file, ``SYNCD_*`` environment variables and secret files,
each turned into a nested dict that pydantic-settings merges by priority."""

from __future__ import annotations

import copy
import json
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from syncd.config.inputs import CONFIG_ENV, ENV_DELIMITER, ENV_PREFIX, setting_variables
from syncd.config.models import Settings
from syncd.errors import ConfigError

# --- sources -------------------------------------------------------------------------------------


class _MappingSource(PydanticBaseSettingsSource):
    """Hands a ready nested dict (TOML file, environment, secrets, overrides) to pydantic."""

    def __init__(
        self, settings_cls: type[BaseSettings], data: Mapping[str, Any], name: str
    ) -> None:
        super().__init__(settings_cls)
        self._data = copy.deepcopy(dict(data))
        self._name = name

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name})"


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] so the structural type is left."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _resolve_key(segments: list[str]) -> tuple[list[str], Any]:
    """Map raw name segments onto the tree: field names match in any case, dict keys keep theirs.

    Returns the normalised path and the annotation at its end (None when the path leaves the tree,
    in which case validation reports the unknown key).
    """
    annotation: Any = Settings
    path: list[str] = []
    for segment in segments:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            field = annotation.model_fields.get(segment.lower())
            path.append(segment.lower())
            annotation = field.annotation if field else None
        elif get_origin(annotation) is dict:
            path.append(segment)
            annotation = get_args(annotation)[1]
        else:
            path.append(segment.lower())
            annotation = None
    return path, annotation


def _decode(raw: str, annotation: Any, *, lines_as_list: bool = False) -> Any:
    """JSON-decode a raw string bound for a list, dict or section; leave the rest to pydantic."""
    target = _unwrap(annotation)
    complex_target = _is_model(target) or get_origin(target) in (list, dict)
    if not complex_target:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        if lines_as_list and get_origin(target) is list:
            return [line.strip() for line in raw.splitlines() if line.strip()]
        return raw  # validation says "must be a valid list" with the key and value


def _set_nested(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for segment in path[:-1]:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = node[segment] = {}
        node = child
    existing = node.get(path[-1])
    if isinstance(existing, dict) and isinstance(value, dict):
        existing.update(value)
    else:
        node[path[-1]] = value


def _nest(items: list[tuple[list[str], str]], *, lines_as_list: bool) -> dict[str, Any]:
    """Nest (raw segments, raw value) pairs; shallower keys go first so deeper ones merge in."""
    data: dict[str, Any] = {}
    top = Settings.model_fields
    for segments, raw in sorted(items, key=lambda item: len(item[0])):
        if not segments or segments[0].lower() not in top or not all(segments):
            continue
        path, annotation = _resolve_key(segments)
        _set_nested(data, path, _decode(raw, annotation, lines_as_list=lines_as_list))
    return data


def _env_data(env: Mapping[str, str]) -> dict[str, Any]:
    """``SYNCD_SQUARE__PAGE_LIMIT=5`` → ``{"square": {"page_limit": "5"}}``; empty means unset."""
    items = [
        (name[len(ENV_PREFIX) :].split(ENV_DELIMITER), value)
        for name, value in setting_variables(env)
    ]
    return _nest(items, lines_as_list=False)


def _secrets_data(directory: Path, key: str) -> dict[str, Any]:
    """One file per key, named ``square.access_token`` or ``square__access_token``.

    Files whose name does not start with a top-level key are ignored: a credentials directory may
    hold other things. A list-valued key takes a JSON array or one item per line.
    """
    if not directory.is_dir():
        raise ConfigError([(key, str(directory), "is not a directory")])
    items: list[tuple[list[str], str]] = []
    for entry in sorted(directory.iterdir()):
        segments = entry.name.replace(ENV_DELIMITER, ".").split(".")
        if segments[0].lower() not in Settings.model_fields or not entry.is_file():
            continue  # not ours (another credential, a hidden file, a directory): never read it
        try:
            content = entry.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([(key, str(entry), f"cannot read secret file: {exc}")]) from exc
        items.append((segments, content))
    return _nest(items, lines_as_list=True)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            [("config_file", str(path), "file not found")],
            hint=f"create it (see config/syncd.example.toml) or unset {CONFIG_ENV}",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at .*\)$", "", str(exc))
        location = f"{path}:{where.group(1)}" if where else str(path)
        at = f" at line {where.group(1)}, column {where.group(2)}" if where else ""
        raise ConfigError(
            [("config_file", location, f"TOML syntax error{at}: {message}")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("config_file", str(path), f"cannot read: {exc}")]) from None
