"""YAML files -> typed dataclasses, with `key.sub=value` overrides from the command line.

Each trainer declares its configuration as nested dataclasses and calls `load_config(Cls, path,
overrides)`. Unknown keys are errors naming the key and the closest valid one; values are checked
against the field's type. No global config object: the result is passed down explicitly.

A YAML file may extend another with a top-level `base: other.yaml` (relative to the including file;
chains allowed, cycles are errors): mappings are merged key by key, the child's lists and scalars
replace the base's. `format_config(cfg)` writes the effective config back as YAML with each key's
meaning, taken from the trailing `# comment` on its dataclass field's line (`detect <command>
--print-config`).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from detect.errors import ConfigError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from an optional YAML file, then apply `key.sub=value` overrides in order."""
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        raw, chain = read_config_yaml(path)
        where = str(path) + (f" (base: {' <- '.join(str(p) for p in chain[1:])})" if len(chain) > 1 else "")
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return from_dict(cls, raw, where=where)


BASE_KEY = "base"


def read_config_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """A YAML config with its `base:` chain resolved: (merged mapping, [path, its base, its base's base, ...])."""
    path = Path(path)
    resolved = path.resolve()
    seen = [p.resolve() for p in _chain]
    if resolved in seen:
        cycle = " -> ".join(str(p) for p in (*_chain[seen.index(resolved):], path))
        raise ConfigError(f"{_chain[0]}: the base: chain is a cycle: {cycle}")
    if _chain and not path.is_file():
        raise ConfigError(f"{_chain[-1]}: base file {path} not found")
    raw = read_yaml(path)
    if BASE_KEY not in raw:
        return raw, [path]
    base = raw.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base must be the path of another YAML file, got {base!r}")
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    merged, chain = read_config_yaml(base_path, (*_chain, path))
    return deep_merge(merged, raw), [path, *chain]


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`: mappings merged key by key; anything else in `child` replaces the base's value."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], raw: dict[str, Any], where: str = "config", prefix: str = "") -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{closest_hint(key, fields, prefix)}")
    kwargs = {name: coerce(hints[name], raw[name], where, prefix + name) for name in raw}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {err}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {err}") from None
    return obj


def closest_hint(key: str, valid: typing.Iterable[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    return f"; valid keys: {', '.join(prefix + v for v in sorted(valid))}"


def coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    """Check (and where lossless, convert) `value` to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(arg, value, where, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [coerce(item_tp, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain dict (YAML/JSON-safe) of a config dataclass, for checkpoints and result files."""
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------- --print-config
@lru_cache(maxsize=None)
def field_meanings(cls: type) -> dict[str, str]:
    """field name -> the trailing `# comment` on its line in the dataclass source (base classes included)."""
    meanings: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
        body = ast.parse(source).body[0]
        for node in getattr(body, "body", []):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                comment = comments.get(node.end_lineno) or comments.get(node.lineno)
                if comment:
                    meanings[node.target.id] = comment
    return meanings


def _flow(value: Any) -> str:
    """One-line YAML for a leaf value (lists and mappings in flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False).strip()
    if text.endswith("\n..."):  # a scalar's end-of-document marker
        text = text[:-4].rstrip()
    return json.dumps(value) if "\n" in text else text  # JSON is YAML, and keeps a multi-line string on one line


def print_config(cfg: Any, path: str | Path | None, overrides: list[str] | None = None) -> None:
    """`--print-config`: the effective config as YAML, each key followed by its meaning."""
    source = f"{path} (base: files merged)" if path else "the defaults"
    header = (f"effective config: {source}, then {len(overrides or [])} override(s)\n"
              f"each key is followed by its meaning; saved as a file, this loads back with --config")
    print(format_config(cfg, header), end="")


def format_config(cfg: Any, header: str | None = None) -> str:
    """The config as YAML that `load_config` reads back to an equal config, each key with its meaning."""
    lines = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
    _format_fields(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _format_fields(obj: Any, indent: int, lines: list[str]) -> None:
    meanings = field_meanings(type(obj))
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        meaning = meanings.get(f.name, "")
        comment = f"  # {meaning}" if meaning else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{comment}")
            _format_fields(value, indent + 1, lines)
        else:
            if isinstance(value, tuple):
                value = list(value)
            lines.append(f"{pad}{f.name}: {_flow(value)}{comment}")
