"""The config's YAML, read strictly (a key given twice, an alias bomb), and a reader of one
mapping of it that names the key in every error."""
from __future__ import annotations

import difflib
from typing import Any, Mapping

import yaml

from pipelines.core.errors import ConfigError

MAX_EXPANDED_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                                  f"(first on line {seen[key].start_mark.line + 1})")
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values the document holds once every alias is expanded (computed per node, so it is fast
    even when the answer is astronomically large)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in `text`; `source` names it in errors.

    Raises:
        ConfigError: not YAML, a key given twice, or more than MAX_EXPANDED_VALUES values once
            aliases are expanded (a "billion laughs" document).
    """
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            raise ConfigError(f"{source}: more than {MAX_EXPANDED_VALUES:,} values once YAML aliases are "
                              "expanded; a config is never that large")
        return yaml.load(text, Loader=_StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}" if not str(error).startswith(source) else str(error)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML ({_one_line(str(error))})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Section:
    """Reads one mapping of the YAML, remembering its path for error messages."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
        self.data = dict(data)
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for name in self.data:
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{self.key(str(name))}: unknown key ({hint}allowed: {', '.join(allowed)})")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                raise ConfigError(f"{self.key(name)}: required")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got {shown(value)}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(name, str, default, required=default is None)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{self.key(name)}: {shown(value)} is not one of {', '.join(choices)}{hint}")
        return value

    def positive_int(self, name: str, default: int | None = None, required: bool = False,
                     minimum: int = 1) -> int | None:
        value = self.get(name, int, default, required)
        if value is not None and value < minimum:
            raise ConfigError(f"{self.key(name)}: must be >= {minimum}, got {value}")
        return value

    def names(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, (list, str), None)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(item, str) and item for item in items):
            raise ConfigError(f"{self.key(name)}: expected a list of names, got {shown(value)}")
        return tuple(items)


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "list": "a list",
                        "dict": "a mapping", "bool": "true/false"}.get(k.__name__, k.__name__) for k in kinds)
