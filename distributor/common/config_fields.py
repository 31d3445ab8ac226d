"""Settings declared once, on the dataclass field: its YAML key, default and bounds.

A stage's config dataclass marks each field with `setting(...)`; from that, `setting_keys` gives the keys a
section allows, `read_settings` reads the simple ones from a Section, and `render_settings` gives the YAML
shape /status/config shows. A field's kind follows from its type:

    bool                 true or false
    int                  an integer, at least `minimum` (`positive`: at least 1), at most `maximum`
    float                a duration (90s, 15m, 1h30m), in seconds; `positive`: 0 refused
    str                  a string, one of `choices` when given
    Path, Path | None    a file path, relative to the config file; blank is refused unless
                         `blank_is_default`; None means "not configured"
    Endpoint             a listen address, host:port
    a settings dataclass a nested section, read and rendered the same way

Anything else (a list, a map keyed by name) is read by the field's `read` and rendered by its `render`;
a value that depends on another key is read by the stage's code and handed to `read_settings` in
`given`. Checks relating several keys run after reading, in the stage's parse function.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from distributor.common.config_reader import Section, format_duration
from distributor.common.endpoint import Endpoint, parse_endpoint

SECRET = "<secret>"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # "" = the field's name
    within: str  # "" = in the class's own section; else the sub-section the key is written in
    minimum: int
    maximum: int | None
    positive: bool
    choices: tuple[str, ...]
    secret: bool  # rendered as <secret>: credentials never reach /status/config
    blank_is_default: bool
    read: Callable[[Section, str], Any] | None  # for a key of no simple kind: (section, key) -> value
    render: Callable[[Any], Any] | None


def setting(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    key: str = "",
    within: str = "",
    minimum: int = 0,
    maximum: int | None = None,
    positive: bool = False,
    choices: tuple[str, ...] = (),
    secret: bool = False,
    blank_is_default: bool = False,
    read: Callable[[Section, str], Any] | None = None,
    render: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is a configuration key (see the module docstring for the kinds)."""
    metadata = {
        Setting: Setting(
            key, within, minimum, maximum, positive, choices, secret, blank_is_default, read, render
        )
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


Settings = TypeVar("Settings")


@typing.dataclass_transform(frozen_default=True, field_specifiers=(setting,))
def settings(cls: type[Settings]) -> type[Settings]:
    """A frozen dataclass whose `setting(...)` fields are configuration keys."""
    return dataclass(frozen=True, slots=True)(cls)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: str
    kind: Any  # the field's resolved type
    setting: Setting
    default: Any  # dataclasses.MISSING for a required field


def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        marked = field.metadata.get(Setting)
        if marked is None:
            continue
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        found.append(_Field(field.name, marked.key or field.name, hints[field.name], marked, default))
    return tuple(found)


def setting_keys(
    cls: type, within: str = "", groups: Mapping[str, tuple[str, ...]] | None = None
) -> tuple[str, ...]:
    """The keys a section of `cls` allows, in field order (`within`: those of one sub-section).

    A sub-section shows as its name; `groups` names those whose name is chosen at run time
    (a forwarder's client settings sit under the name of its backend)."""
    keys: list[str] = []
    for field in _fields(cls):
        names: tuple[str, ...]
        if within:
            names = (field.key,) if field.setting.within == within else ()
        elif field.setting.within:
            names = (groups or {}).get(field.setting.within, (field.setting.within,))
        else:
            names = (field.key,)
        keys.extend(name for name in names if name not in keys)
    return tuple(keys)


def settings_section(parent: Section, key: str, cls: type) -> Section:
    """The sub-section `key` of `parent`, holding the settings of `cls`."""
    return parent.section(key, setting_keys(cls))


def read_settings(
    section: Section,
    cls: type[Settings],
    given: Mapping[str, Any] | None = None,
    groups: Mapping[str, str] | None = None,
) -> Settings:
    """An instance of `cls` from `section`: fields in `given` as given, the others read by their kind
    (a missing key keeps the default; a wrong one is reported and, when collecting, keeps the default).

    `groups` names the sub-sections whose name is chosen at run time."""
    values = dict(given or {})
    subsections: dict[str, Section] = {}
    for field in _fields(cls):
        if field.name in values:
            continue
        within = field.setting.within
        if within and within not in subsections:
            name = (groups or {}).get(within, within)
            subsections[within] = section.section(name, setting_keys(cls, within))
        values[field.name] = _read(subsections[within] if within else section, field)
    return cls(**values)


def _read(section: Section, field: _Field) -> Any:
    kind, key, default, marked = field.kind, field.key, field.default, field.setting
    if marked.read is not None:
        return marked.read(section, key)
    if kind is bool:
        return section.boolean(key, default)
    if kind is int:
        if marked.positive:
            return section.positive_integer(key, default, marked.maximum)
        return section.integer(key, default, marked.minimum, marked.maximum)
    if kind is float:
        return section.positive_duration(key, default) if marked.positive else section.duration(key, default)
    if kind is str:
        # A required key reads as blank when missing; the stage's check says what it needs.
        value = section.string(key, "" if default is dataclasses.MISSING else default)
        if marked.blank_is_default and not value:
            return default
        if marked.choices and value not in marked.choices:
            section.fail(key, f"expected one of {', '.join(marked.choices)}, got {value!r}")
            return default
        return value
    if kind is Path or kind == Path | None:
        return _read_path(section, field)
    if kind is Endpoint:
        try:
            return parse_endpoint(section.string(key, str(default)))
        except ValueError as err:
            section.fail(key, str(err))
            return default
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return read_settings(section.section(key, setting_keys(kind)), kind)
    raise TypeError(f"{field.name}: a {kind} setting is read by its stage's code (pass it in `given`)")


def _read_path(section: Section, field: _Field) -> Path | None:
    default = "" if field.default is None else str(field.default)
    text = section.string(field.key, default)
    if section.has(field.key) and not text:
        if not field.setting.blank_is_default:
            section.fail(field.key, "must be a file path")
        text = default
    # Relative paths are relative to the file they are written in, not to the working directory.
    return (Path(section.file).parent / text).resolve() if text else None


def render_settings(settings: object, groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The YAML shape of a settings dataclass, as an operator would write it (secrets masked)."""
    rendered: dict[str, Any] = {}
    for field in _fields(type(settings)):
        value = _render(getattr(settings, field.name), field.setting)
        within = field.setting.within
        if within:
            rendered.setdefault((groups or {}).get(within, within), {})[field.key] = value
        else:
            rendered[field.key] = value
    return rendered


def _render(value: Any, marked: Setting) -> Any:
    if marked.secret:
        return SECRET
    if marked.render is not None:
        return marked.render(value)
    return render_value(value)


def render_value(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, Path | Endpoint):
        return str(value)
    if isinstance(value, tuple):
        return [render_value(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return render_settings(value)
    raise TypeError(f"no YAML shape for {type(value).__name__}")


__all__ = [
    "SECRET",
    "Setting",
    "read_settings",
    "render_settings",
    "render_value",
    "setting",
    "setting_keys",
    "settings",
    "settings_section",
]
