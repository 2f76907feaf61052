"""Library settings (frozen dataclasses) as ml_collections ConfigDict sections, and back, by field name.

The dataclasses hold the defaults (`train.TrainConfig`, `sampler.SamplerConfig`, `pretrain.PretrainConfig`,
...); a config file builds its sections from them with `section`, so a default lives in one place, and the
launch layer turns a section back into the dataclass with `from_section`, whose constructor validates it.
A nested dataclass field becomes a nested section; a field whose default is None becomes a typed
placeholder, so that `--config.a.b=3` can still set it on the command line.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import ml_collections


class FieldError(ValueError):
    """A settings field out of range; the message starts with the field's name, so that the launch layer can
    name it as its config key (`metadiff.steps must be ...`)."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")


def check_counts(settings, *names: str) -> None:
    """FieldError for the first of the fields `names` (step counts, batch sizes) below 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise FieldError(name, f"must be at least 1, got {getattr(settings, name)}.")


def check_grid(settings, name: str, what: str, smallest: float = 0.0, inclusive: bool = False) -> None:
    """FieldError unless the field `name` is a non-empty grid of values above `smallest` (or at it, when
    `inclusive`); `what` names its values in the message ("positive rates", "penalties of 0 or more")."""
    values = getattr(settings, name)
    if not values or (min(values) < smallest if inclusive else min(values) <= smallest):
        raise FieldError(name, f"must be one or more {what}, got {values}.")


def flattened(section, prefix: str = "") -> dict[str, object]:
    """The dotted keys and values of a ConfigDict or nested dict (its subsections' keys too)."""
    keys = {}
    for name, value in section.items():
        if hasattr(value, "items"):
            keys.update(flattened(value, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = value
    return keys


def differing_keys(a, b) -> list[str]:
    """The dotted keys whose values differ between two configs (ConfigDicts or nested dicts), or that only
    one of them has, sorted."""
    flat_a, flat_b = flattened(a), flattened(b)
    return sorted(key for key in flat_a.keys() | flat_b.keys() if flat_a.get(key, _MISSING) != flat_b.get(key, _MISSING))


_MISSING = object()


def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _optional_type(annotation):
    """int for `int | None`, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            return others[0]
    return None


def section(settings, exclude: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A ConfigDict with one key per field of the dataclass instance `settings` (but `exclude`)."""
    types_by_name = _field_types(type(settings))
    values = {}
    for field in dataclasses.fields(settings):
        if field.name in exclude:
            continue
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            value = section(value)
        elif value is None:
            value = ml_collections.config_dict.placeholder(_optional_type(types_by_name[field.name]) or object)
        values[field.name] = value
    return ml_collections.ConfigDict(values)


def from_section(cls, values, **given):
    """`cls(**fields)` with each field read from `values` (a ConfigDict or dict) by name; `given` fields win.

    Keys of `values` that are not fields of `cls` are ignored (a section may hold other settings beside them).
    Tuples stored as lists (a config read back from JSON) become tuples again.
    """
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    types_by_name = _field_types(cls)
    fields = {}
    for field in dataclasses.fields(cls):
        if field.name in given:
            fields[field.name] = given[field.name]
        elif field.name in values:
            value, annotation = values[field.name], types_by_name[field.name]
            if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
                try:
                    value = from_section(annotation, value)
                except FieldError as error:
                    raise FieldError(f"{field.name}.{error.field}", error.problem) from error
            elif typing.get_origin(annotation) is tuple and isinstance(value, list):
                value = tuple(value)
            fields[field.name] = value
    return cls(**fields)
