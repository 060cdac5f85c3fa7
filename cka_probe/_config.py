"""Reading configuration files and ``--set`` overrides, and checking them with one typed schema.

Every configuration of cka-probe (figure and zoo jobs, training recipes) is YAML read with
``yaml.safe_load``, overridden with ``--set key=value`` strings parsed by :func:`parse_override`, and
checked by a pydantic v2 model built on :class:`Section` (unknown keys refused, no type coercion). A
failed check becomes one :class:`~cka_probe.errors.ConfigError` line naming the key, the value and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ._choices import DEVICE_PATTERN, DEVICES, one_of
from .errors import ConfigError

__all__ = ["DeviceName", "Section", "parse_override", "parse_overrides", "read_yaml", "set_dotted", "validate"]


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors and values are not coerced
    (``"8"`` is not a number, ``1.7`` is not a count)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def _device_name(value: str) -> str:
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"must be {one_of(DEVICES)}")
    return value


DeviceName = Annotated[str, AfterValidator(_device_name)]
"""A device as every config names it (:data:`~cka_probe._choices.DEVICE_PATTERN`)."""


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """``yaml.safe_load`` of a file, with one-line errors for a missing file or bad syntax."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist; give the path of a YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {path} is a directory; give the path of a YAML file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} file {path} is not valid YAML{where}; fix its syntax") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"data.n=64"`` -> ``("data.n", 64)``; the value is read as YAML (numbers, booleans, null, lists).

    A list item is named by its index among the keys: ``models.0.name=resnet18``.

    >>> parse_override("analysis.layers=[stem.*, head]")
    ('analysis.layers', ['stem.*', 'head'])
    >>> parse_override("models.1.label=B")
    ('models.1.label', 'B')
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.([A-Za-z_][\w-]*|\d+))*", key):
        raise ConfigError(
            f"--set {item!r}: write it as key=value, sections and list indices joined by dots, "
            "e.g. --set data.n=64 or --set models.0.name=resnet18"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(
            f"--set {item!r}: the value is not valid YAML; quote it, e.g. --set '{key}=\"...\"'"
        ) from None
    return key, value


def parse_overrides(items: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Several ``key=value`` strings (or an already parsed mapping) as ``{dotted key: value}``."""
    if isinstance(items, Mapping):
        return dict(items)
    return dict(parse_override(item) for item in items)


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections on the way.

    A number names an existing item of a list (``models.0.name``); a list item that is a plain value
    (``models: [resnet18]``) becomes ``{"name": value}`` when one of its keys is set.
    """
    keys = dotted.split(".")
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the file"
        if isinstance(node, list):
            if not key.isdigit():
                raise ConfigError(f"--set {dotted}: {where} is a list; name its item by number, e.g. {where}.0.{key}")
            index = int(key)
            if index >= len(node):
                raise ConfigError(
                    f"--set {dotted}: {where} has {len(node)} items (numbered from 0); add the item in the file"
                )
            if last:
                node[index] = value
                return
            if not isinstance(node[index], dict):
                node[index] = {"name": node[index]} if isinstance(node[index], str) else {}
            node = node[index]
            continue
        if not isinstance(node, dict) or key.isdigit():
            raise ConfigError(f"--set {dotted}: {where} is not a list; list items are numbered, sections named")
        if last:
            node[key] = value
            return
        if node.get(key) is None:
            node[key] = {}
        elif not isinstance(node[key], dict | list):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = node[key]


def validate(schema: type[BaseModel], raw: Any, source: str = "config", *, overrides: bool = True) -> BaseModel:
    """Check ``raw`` against ``schema``; the first problem becomes a one-line :class:`ConfigError`.

    ``overrides``: whether the command takes ``--set KEY=VALUE`` (the fix the message suggests besides the file).
    """
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise schema_error(exc, source, schema, overrides=overrides) from None


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|tuple)$|[^a-z0-9_]")


def schema_error(
    exc: ValidationError, source: str = "config", schema: type[BaseModel] | None = None, *, overrides: bool = True
) -> ConfigError:
    """One line from a pydantic error: the key as a dotted path, what is wrong, the value, the fix."""
    errors = exc.errors(include_url=False)
    # A value that fits no member of a union reports once per member; the deepest path says the most.
    error = max(
        errors, key=lambda e: (len([p for p in e["loc"] if not _is_type_tag(p)]), e["type"] == "extra_forbidden")
    )
    kind = error["type"]
    loc = error["loc"]
    where = (
        _loc_text(loc[:-1]) + (f".{loc[-1]}" if loc[:-1] else str(loc[-1]))
        if kind == "extra_forbidden"
        else _loc_text(loc)
    )
    if kind == "extra_forbidden":
        valid = _fields_at(schema, loc[:-1]) if schema is not None else []
        listed = (
            f"; valid keys{' of ' + _loc_text(loc[:-1]) if _loc_text(loc[:-1]) else ''} are {', '.join(valid)}"
            if valid
            else "; check its spelling"
        )
        return ConfigError(f"{source}: unknown key {where!r}{listed}{_did_you_mean(str(loc[-1]), valid)}")
    if kind == "missing":
        return ConfigError(f"{source}: {where} is missing; add it")
    message = re.sub(r" or instance of \w+", "", error["msg"].rstrip(".").removeprefix("Value error, "))
    message = message[0].lower() + message[1:] if message else "invalid value"
    if not where:
        return ConfigError(f"{source}: {message}")
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) and value is not None else ""
    if not overrides:
        fix = "; fix it in the file"
    elif re.fullmatch(r"[\w.]+", where):
        fix = f"; fix it in the file or with --set {where}=VALUE"
    elif re.fullmatch(r"[\w.]+(\[\d+\])+", where):
        fix = f"; fix it in the file or with --set {where.split('[')[0]}=[...]"
    else:
        fix = "; fix it in the file"
    return ConfigError(f"{source}: {where or 'the file'}: {message}{shown}{fix}")


def _did_you_mean(key: str, valid: list[str]) -> str:
    """``; did you mean 'min_lr'?`` for ``lr_min`` (the same words in another order) or a close spelling."""
    import difflib

    same_words = [k for k in valid if sorted(k.split("_")) == sorted(key.split("_"))]
    close = same_words or difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The keys valid at ``loc`` of ``schema`` (walking sections and list items)."""
    import typing

    model: Any = schema
    for part in loc:
        if _is_type_tag(part) or isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        while typing.get_args(model) and not (isinstance(model, type) and issubclass(model, BaseModel)):
            inner = [a for a in typing.get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)]
            if inner:
                model = inner[0]
                break
            nested = [a for a in typing.get_args(model) if typing.get_args(a)]
            if not nested:
                break
            model = nested[0]
    return sorted(getattr(model, "model_fields", {}))


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_TYPE_TAG.search(part))


def _loc_text(loc: tuple) -> str:
    text = ""
    for part in loc:
        if _is_type_tag(part):
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
