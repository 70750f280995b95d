"""Config models that refuse what they do not know, and one sentence for what they refused.

A typo in a YAML file (``szie: 4``) or in a dict (``desktop={"screen_widht": 800}``) must not be
accepted and then replaced by a default: the pool would run on size 1 or host-process desktops and
nobody would know why. Every config model subclasses :class:`StrictModel`, and every loader turns
pydantic's error into :func:`explain`'s text: the file, the key's full path, and the nearest valid
key (difflib), so the user's fix is one edit.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError


class StrictModel(BaseModel):
    """A pydantic model whose unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The valid name ``word`` most likely misspells, or None when nothing is close."""
    found = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'size'?)`` or, when nothing is close, the valid names."""
    choices = sorted(choices)
    close = nearest(word, choices)
    return f" (did you mean {close!r}?)" if close else f" (valid: {', '.join(choices)})"


def explain(exc: ValidationError, model: type[BaseModel], source: str, prefix: tuple[str, ...] = ()) -> str:
    """One line per problem of ``exc``: ``<source>: unknown key 'pool.szie' (did you mean 'size'?)``.

    ``prefix`` is where the model's data sat in the file (``("pool",)`` for a pool YAML's section),
    so the key is named as the user wrote it.
    """
    lines = []
    for error in exc.errors():
        location = tuple(str(part) for part in error["loc"])
        dotted = ".".join(prefix + location) or "(top level)"
        if error["type"] == "extra_forbidden":
            valid = _field_names(model, location[:-1])
            lines.append(f"{source}: unknown key {dotted!r}{did_you_mean(location[-1], valid)}")
        else:
            lines.append(f"{source}: {dotted}: {message(error)} (got {_shown(error.get('input'))})")
    return "\n".join(lines)


def message(error: Any) -> str:
    """pydantic's message for one error, without the ``Value error, `` its validators' messages carry."""
    return str(error["msg"]).removeprefix("Value error, ")


def _field_names(model: type[BaseModel], path: tuple[str, ...]) -> set[str]:
    """The keys valid at ``path`` inside ``model`` (nested models followed by field name)."""
    current: Any = model
    for name in path:
        field = current.model_fields.get(name) if _is_model(current) else None
        if field is None:
            return set()
        current = _model_in(field.annotation)
    return set(current.model_fields) if _is_model(current) else set()


def _model_in(annotation: Any) -> Any:
    """The BaseModel class inside ``annotation`` (``DesktopSpec``, ``DesktopSpec | None``), if any."""
    if _is_model(annotation):
        return annotation
    for argument in typing.get_args(annotation):
        if _is_model(argument):
            return argument
    return None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_yaml_section(path: str | Path, section: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The mapping under ``section:`` of a YAML file (or the whole file if it has no such key), and
    the key path it sat at; a missing, unreadable or malformed file is a :class:`ConfigError` naming it."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}",
                          hint="fix the YAML syntax there (indentation, a missing ':' or quote)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(raw).__name__}",
                          hint=f"write '{section}:' followed by indented 'key: value' lines")
    if section in raw:
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: '{section}:' must hold indented 'key: value' lines",
                              hint=f"indent the keys under '{section}:'")
        return raw[section], (section,)
    return raw, ()
