"""Strict YAML reading: every value keeps the line it came from, so errors name file, line and key.

Both the service configuration and the per-tenant overrides file are read through here; there is one
duration parser and one way of reporting a bad key.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from distributor.common.errors import DistributorError


class ConfigError(DistributorError):
    """A configuration or overrides file is invalid; str() is one line: `file:line: key: problem`."""

    def __init__(self, file: str, line: int | None, key: str, problem: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class ConfigNote:
    """Something in a file that is accepted but worth a warning (a Tempo setting this service does not
    use, a value that looks like an unexpanded `${VAR}`); str() is one line: `file:line: key: note`."""

    file: str
    line: int | None
    key: str
    text: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.text}" if self.key else f"{where}: {self.text}"


# A section's keys that belong to other Tempo components: key -> why it is ignored (None: not one).
Foreign = Callable[[str], str | None]


def foreign_keys(reasons: Mapping[str, str], prefixes: Mapping[str, str] | None = None) -> Foreign:
    """The Foreign for these keys, and for every key starting with one of `prefixes`."""

    def reason(key: str) -> str | None:
        if key in reasons:
            return reasons[key]
        return next((why for prefix, why in (prefixes or {}).items() if key.startswith(prefix)), None)

    return reason


@dataclass(frozen=True, slots=True)
class Located:
    """A YAML value (dict of Located, list of Located, or a scalar) and where it was written."""

    value: Any
    line: int
    path: str


# Bounds on what one file may make the reader build. PyYAML composes recursively: without a depth
# bound a few kilobytes of `[[[[...` raise RecursionError. Aliases share nodes, so a few hundred bytes
# of nested aliases ("billion laughs") stand for 10^9 nodes once walked. A real overrides file of
# 10,000 tenants is about 100,000 nodes, 10 levels deep, with no aliases.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_NESTING_DEPTH = 100
MAX_ALIASES = 100
MAX_NODES = 1_000_000


_NESTED_TOO_DEEPLY = f"nested too deeply (more than {MAX_NESTING_DEPTH} levels)"


class _Refused(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_NESTING_DEPTH (before the recursion does) and
    more than MAX_ALIASES aliases while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _Refused(line, f"too many aliases (more than {MAX_ALIASES})")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _Refused(line, _NESTED_TOO_DEEPLY)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_BoundedLoader)
    except _Refused as err:
        raise ConfigError(file, err.line, "", err.problem) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, line, "", f"invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(file, None, "", f"invalid YAML: {err}") from None


_constructor = yaml.SafeLoader(stream="")


def _expanded_size(node: yaml.Node, depth: int, sizes: dict[int, int], file: str) -> int:
    """How many nodes `node` stands for once every alias is walked, without walking them: aliases share
    nodes, so each is counted once (memoised by identity). Also bounds the depth, aliases included,
    which refuses an alias cycle (`&a [*a]`, which PyYAML composes) before anything recurses on it."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if depth > MAX_NESTING_DEPTH:
        raise ConfigError(file, node.start_mark.line + 1, "", _NESTED_TOO_DEEPLY)
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            size += _expanded_size(key_node, depth + 1, sizes, file)
            size += _expanded_size(value_node, depth + 1, sizes, file)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, depth + 1, sizes, file) for item in node.value)
    if size > MAX_NODES:
        problem = f"too many nodes (more than {MAX_NODES} once aliases are expanded)"
        raise ConfigError(file, node.start_mark.line + 1, "", problem)
    sizes[id(node)] = size
    return size


def _to_located(node: yaml.Node, path: str, file: str) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        items: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(file, key_line, path, "mapping keys must be strings")
            key = str(_constructor.construct_object(key_node))
            child_path = f"{path}.{key}" if path else key
            if key in items:
                raise ConfigError(file, key_line, child_path, "duplicate key")
            child = _to_located(value_node, child_path, file)
            # Errors about a key point at the key's line, which is where an operator looks.
            items[key] = Located(child.value, key_line, child_path)
        return Located(items, line, path)
    if isinstance(node, yaml.SequenceNode):
        return Located(
            [_to_located(item, f"{path}[{i}]", file) for i, item in enumerate(node.value)], line, path
        )
    return Located(_constructor.construct_object(node), line, path)


def read_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES, limit_setting: str = "") -> bytes:
    """A regular file's content, refused over `max_bytes` (`limit_setting`: the key that sets it)."""
    try:
        return read_regular_file(path, max_bytes)
    except FileRefused as err:
        limit = f" ({limit_setting})" if limit_setting and err.over_limit else ""
        raise ConfigError(str(path), None, "", f"{err}{limit}") from None
    except OSError as err:
        raise ConfigError(str(path), None, "", f"cannot read: {err.strerror or err}") from None


class FileRefused(Exception):
    """A path that is not read: not a regular file, or larger than the limit."""

    def __init__(self, problem: str, over_limit: bool = False) -> None:
        super().__init__(problem)
        self.over_limit = over_limit


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most `max_bytes`; raises FileRefused or OSError.

    A FIFO would block the reader until a writer appears and a device may never end, so the type is
    checked before opening, and the open is non-blocking in case the path is swapped in between."""
    _refuse_irregular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        _refuse_irregular(status.st_mode)
        if status.st_size > max_bytes:
            raise FileRefused(f"is {status.st_size} bytes, over the limit of {max_bytes} bytes", True)
        data = file.read(max_bytes + 1)  # the file may have grown since fstat
    if len(data) > max_bytes:
        raise FileRefused(f"is over the limit of {max_bytes} bytes", True)
    return data


def _refuse_irregular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a device")
    raise FileRefused(f"not a regular file ({kind})")


def decode_text(data: bytes, file: str, expand_env: bool = False) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, None, "", "not UTF-8 text") from None
    return expand_env_vars(text) if expand_env else text


def read_yaml(path: Path, expand_env: bool = False) -> tuple[Located | None, str]:
    """Read and compose a YAML file; returns its root (None for an empty file) and its text."""
    text = decode_text(read_bytes(path), str(path), expand_env)
    return parse_yaml_text(text, str(path)), text


def parse_yaml_text(text: str, file: str) -> Located | None:
    node = _compose(text, file)
    if node is None:
        return None
    _expanded_size(node, 0, {}, file)
    return _to_located(node, "", file)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env_vars(text: str) -> str:
    """Expand `${VAR}` and `${VAR:-default}` the way Tempo's -config.expand-env does."""
    import os

    return _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def unexpanded_references(root: Located | None, file: str) -> list[ConfigNote]:
    """A note for every string value holding what looks like a `${VAR}` or `${VAR:-default}` reference,
    for a file read without -config.expand-env: such a value is taken literally (a key such as
    `${DD_API_KEY:-x}` would work as the key "${DD_API_KEY:-x}"). Only the variable is named: a default
    may be a secret."""
    notes: list[ConfigNote] = []

    def walk(node: Located) -> None:
        value = node.value
        if isinstance(value, dict):
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)
        elif isinstance(value, str):
            names = sorted({found.group(1) for found in _ENV_REFERENCE.finditer(value)})
            if names:
                listed = ", ".join(f"${{{name}}}" for name in names)
                notes.append(
                    ConfigNote(
                        file,
                        node.line,
                        node.path,
                        f"looks like an unexpanded reference to {listed}; it is taken literally "
                        "(start with -config.expand-env to expand it)",
                    )
                )

    if root is not None:
        walk(root)
    return notes


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go/Prometheus-style duration such as `90s`, `15m`, `1h30m` or `0`; returns seconds."""
    text = text.strip()
    if text == "0":
        return 0.0
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(f"invalid duration {text!r} (expected e.g. 90s, 15m, 1h30m)")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for display: 900 -> `15m0s`, as Go prints durations."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Section:
    """Typed, strict access to one YAML mapping: unknown keys are errors, every read names its key.

    Without `problems` the first error raises ConfigError (what the service does). With a list, every
    error is recorded there and reading goes on with the default, so a checker can report them all.

    A key that `foreign` names (one of Tempo's, for a component this service does not have) is not an
    error: it is dropped with a note in `notes`, which sub-sections share. `legacy` keys (Tempo's former
    names of allowed ones) are accepted without being offered in the unknown-key message.
    """

    def __init__(
        self,
        node: Located | None,
        path: str,
        file: str,
        allowed: tuple[str, ...] | None,
        problems: list[ConfigError] | None = None,
        notes: list[ConfigNote] | None = None,
        foreign: Foreign | None = None,
        legacy: tuple[str, ...] = (),
    ) -> None:
        self.file = file
        self.path = path
        self.problems = problems
        self.notes: list[ConfigNote] = [] if notes is None else notes
        self.line = node.line if node is not None else None
        self._items: dict[str, Located] = {}
        if node is not None and node.value is not None:
            if isinstance(node.value, dict):
                self._items = node.value
            else:
                self.fail_at(node, f"expected a mapping, got {_type_name(node.value)}")
        for key, child in list(self._items.items()):
            if allowed is not None and key not in allowed and key not in legacy:
                reason = foreign(key) if foreign is not None else None
                if reason is not None:
                    self.note_at(child, f"ignored: {reason}")
                else:
                    self.fail_at(child, f"unknown key (allowed: {', '.join(allowed)})")
                del self._items[key]

    def note_at(self, node: Located, text: str) -> None:
        self.notes.append(ConfigNote(self.file, node.line, node.path or self.path, text))

    def fail_at(self, node: Located, problem: str) -> None:
        self._report(ConfigError(self.file, node.line, node.path or self.path, problem))

    def fail(self, key: str, problem: str) -> None:
        node = self._items.get(key)
        path = f"{self.path}.{key}" if self.path else key
        self._report(ConfigError(self.file, node.line if node else self.line, path, problem))

    def _report(self, error: ConfigError) -> None:
        if self.problems is None:
            raise error
        self.problems.append(error)

    def has(self, key: str) -> bool:
        return key in self._items and self._items[key].value is not None

    def node(self, key: str) -> Located | None:
        return self._items.get(key)

    def section(
        self,
        key: str,
        allowed: tuple[str, ...] | None,
        foreign: Foreign | None = None,
        legacy: tuple[str, ...] = (),
    ) -> Section:
        """A nested mapping; `allowed=None` accepts any key (e.g. tenant ids); `foreign` and `legacy`:
        see the class."""
        path = f"{self.path}.{key}" if self.path else key
        item = self._items.get(key)
        return Section(item, path, self.file, allowed, self.problems, self.notes, foreign, legacy)

    def reopened(self, key: str) -> Section:
        """The sub-section `key` again, to report what a check across its keys finds after reading; its
        shape and keys were reported when it was first opened, so they are not reported twice."""
        path = f"{self.path}.{key}" if self.path else key
        reopened = Section(None, path, self.file, None, self.problems, self.notes)
        node = self._items.get(key)
        if node is not None:
            reopened.line = node.line
            if isinstance(node.value, dict):
                reopened._items = node.value
        return reopened

    def entries(self, key: str, allowed: tuple[str, ...], expected: str) -> Iterator[Section]:
        """A list of mappings, each a Section named `key[index]`; `expected` says what a wrong value
        should have been (e.g. "expected a list of forwarders")."""
        node = self._items.get(key)
        if node is None or node.value is None:
            return
        if not isinstance(node.value, list):
            self.fail(key, expected)
            return
        path = f"{self.path}.{key}" if self.path else key
        for index, item in enumerate(node.value):
            yield Section(item, f"{path}[{index}]", self.file, allowed, self.problems, self.notes)

    def items(self) -> Iterator[tuple[str, Located]]:
        return iter(self._items.items())

    def boolean(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self._items[key].value
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: int, minimum: int | None = 0, maximum: int | None = None) -> int:
        if not self.has(key):
            return default
        value = self._items[key].value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {value!r}")
        elif minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        elif maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}, got {value}")
        else:
            return value
        return default

    def string(self, key: str, default: str) -> str:
        if not self.has(key):
            return default
        value = self._items[key].value
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {value!r}")
            return default
        return value

    def duration(self, key: str, default: float) -> float:
        if not self.has(key):
            return default
        value = self._items[key].value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(key, f"expected a duration such as 90s, 15m or 1h30m, got {value!r}")
        elif isinstance(value, int):
            if value == 0:
                return 0.0
            self.fail(key, f"a duration needs a unit (e.g. {value}s), got {value}")
        else:
            try:
                return parse_duration(value)
            except ValueError as err:
                self.fail(key, str(err))
        return default

    def positive_duration(self, key: str, default: float) -> float:
        """A duration that must not be 0 (a period, an interval, a timeout)."""
        value = self.duration(key, default)
        if value <= 0:
            self.fail(key, "must be greater than 0")
        return value

    def positive_integer(self, key: str, default: int, maximum: int | None = None) -> int:
        """A size or a count that must not be 0."""
        return self.integer(key, default, minimum=1, maximum=maximum)


Entry = TypeVar("Entry")


def read_entries(
    parent: Section,
    key: str,
    allowed: tuple[str, ...],
    expected: str,
    read: Callable[[Section], Entry | None],
    unique_by: Callable[[Entry], Hashable],
    duplicate: tuple[str, Callable[[Entry], str]],
) -> tuple[Entry, ...]:
    """A list of named sections (forwarders, API keys): each entry read by `read` (None: refused, already
    reported), and an entry whose `unique_by` repeats an earlier one's reported at the entry's
    `duplicate[0]` key with the problem `duplicate[1]` gives."""
    duplicate_key, duplicate_problem = duplicate
    kept: dict[Hashable, Entry] = {}
    for section in parent.entries(key, allowed, expected):
        entry = read(section)
        if entry is None:
            continue
        identity = unique_by(entry)
        if identity in kept:
            section.fail(duplicate_key, duplicate_problem(entry))
            continue
        kept[identity] = entry
    return tuple(kept.values())


def _type_name(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return repr(value)
