"""Config as output: the redacted effective config (``syncd config check``) and the walk over every
field that the docs test uses."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    SecretStr,
)
from pydantic.fields import FieldInfo

from syncd.config.fields import SECRET_MASK
from syncd.config.loading import _contains_secret
from syncd.config.models import Settings
from syncd.config.sources import _is_model, _unwrap

# --- output --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return SECRET_MASK
    if isinstance(value, BaseModel):
        return {
            name: _plain(getattr(value, name))
            for name, field in type(value).model_fields.items()
            if not (
                isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("legacy")
            )
        }
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as a JSON-able dict; each secret is ``"***"`` (null if unset)."""
    result = _plain(settings)
    assert isinstance(result, dict)
    return result


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One documented key: dotted name (``<name>`` for a map key), type, default and meaning.

    ``type`` escapes ``|`` as ``\\|`` so that it can go straight into a Markdown table.
    """

    key: str
    type: str
    default: str
    description: str
    secret: bool


_TYPE_NAMES = {str: "string", int: "integer", float: "number", Path: "path", SecretStr: "secret"}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        name = " \\| ".join(_type_name(a) for a in members)
        return f"{name} (optional)" if len(members) < len(get_args(annotation)) else name
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"table of {_type_name(get_args(annotation)[1])}"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_default"), str):
        return str(extra["doc_default"])
    if field.is_required():
        return "required"
    value = _plain(field.get_default(call_default_factory=True))
    return "unset" if value is None else json.dumps(value)


def describe_settings(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[FieldDoc]:
    """Yield every leaf key of the tree (for the docs, the example config, ``config`` commands)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        target = _unwrap(field.annotation)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("legacy"):
            continue  # accepted and converted on input; documented as a deprecation only
        if isinstance(extra.get("doc_as"), str):
            yield FieldDoc(
                key=key,
                type=f"table of {extra['doc_as']}.* keys",
                default="{}",
                description=field.description or "",
                secret=False,
            )
        elif _is_model(target):
            yield from describe_settings(target, f"{key}.")
        elif get_origin(target) is dict and _is_model(_unwrap(get_args(target)[1])):
            yield from describe_settings(_unwrap(get_args(target)[1]), f"{key}.<name>.")
        else:
            yield FieldDoc(
                key=key,
                type=_type_name(field.annotation),
                default=_default_text(field),
                description=field.description or "",
                secret=_contains_secret(field.annotation),
            )
