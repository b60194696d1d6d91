"""Configuration files (TOML in conf/) with command-line overrides.

Every stage takes ``--conf FILE`` and any number of ``--set section.key=value`` overrides.
The resolved configuration is written next to the stage's outputs as JSON, so a run can
be reproduced and a directory made with another configuration can be recognised.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib

from sertool.errors import SertoolError

# The shipped configurations are package data (sertool/conf/*.toml), so an installed wheel finds
# exactly what a checkout does; the top-level conf/ is a symlink to this one folder, the place
# users copy from. A regular install always unpacks to disk, so a plain Path is safe here.
CONF_DIR = Path(str(files("sertool").joinpath("conf")))


class ConfigError(SertoolError, ValueError):
    pass


def deep_update(base: dict, update: Mapping) -> dict:
    """Return ``base`` updated recursively with ``update`` (nested tables merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as a TOML value, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: not of the form key=value (a key in a table: "
                          "table.key=value)")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(conf: dict, overrides: Iterable[str]) -> dict:
    out = copy.deepcopy(conf)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a table")
        node[path[-1]] = value
    return out


def shipped_conf(name: str) -> Path:
    """The path of a shipped configuration file (e.g. ``frontend.toml``); an error if absent."""
    path = CONF_DIR / name
    if not path.is_file():
        raise ConfigError(f"{path}: shipped configuration missing (broken install? reinstall "
                          "sertool)")
    return path


def find_conf(path: str | Path) -> Path:
    """``path`` itself, or, when no such file exists and it is a bare name, the shipped file of
    that name (``--conf mfcc.toml`` or ``--model-conf model_resnet_tiny`` work from anywhere)."""
    path = Path(path)
    if path.is_file() or len(path.parts) != 1:
        return path
    for name in (path.name, f"{path.name}.toml"):
        if (CONF_DIR / name).is_file():
            return CONF_DIR / name
    return path


def load_toml(path: str | Path) -> dict:
    path = find_conf(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found (shipped ones: "
                          f"{', '.join(sorted(p.name for p in CONF_DIR.glob('*.toml')))})")
    try:
        raw = path.read_bytes()
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:  # TOML is UTF-8: name the line, as for data files
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}; save "
                          "the file as UTF-8)") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err


Limits = Mapping[str, tuple[float | None, float | None]]  # dotted key -> (min, max), inclusive

# The range of every configuration's seed (train, finetune: one rule): what numpy's legacy
# seeding (np.random.seed) takes; numpy's Generator refuses a negative seed; torch and Python's
# random take the whole range.
SEED_RANGE = (0, 2**32 - 1)


def load_config(
    default: Mapping, path: str | Path | None = None, overrides: Iterable[str] = (),
    limits: Limits | None = None, *, stored: tuple[str, Mapping] | None = None,
) -> dict:
    """Defaults, then a stored configuration (``stored``: (where it was read from, what it
    holds), e.g. a bundle's frontend.json), then the file (if any), then the overrides.
    Unknown keys, values of another type than the default's and values outside ``limits`` are
    refused, naming where they came from, before anything is run or written."""
    conf = copy.deepcopy(dict(default))
    sources: list[tuple[str, Mapping]] = []  # (where, what it set), the later winning
    if stored is not None:
        where, given = stored
        if not isinstance(given, Mapping):
            raise ConfigError(f"{where}: expected a table of options, got {given!r}")
        sources.append((where, given))
    if path is not None:
        sources.append((str(find_conf(path)), load_toml(path)))
    sources += [(f"--set {text}", apply_overrides({}, [text])) for text in overrides]
    for where, given in sources:
        check_known(default, given, where)
        check_types(default, given, where)
        conf = deep_update(conf, given)
    check_limits(conf, limits or {}, sources)
    return conf


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list"}
_PLURAL_NAMES = {bool: "true/false values", int: "integers", float: "numbers", str: "strings",
                 list: "lists"}


def _kind_of(value: object) -> type | None:
    return next((t for t in (bool, int, float, str, list) if isinstance(value, t)), None)


def _has_kind(value: object, kind: type) -> bool:
    """``value`` is of ``kind`` (an integer is a number too, a bool is neither)."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind) or kind is float and isinstance(value, int)


def type_problem(default: Mapping, given: Mapping, prefix: str = "") -> str | None:
    """What is wrong with the types in ``given`` (each value of its default's type, a list's
    items of the type of the default list's items), e.g. ``"mel.n_fft must be an integer, got
    1e9"``; None when nothing is."""
    for key, value in given.items():
        want = default.get(key)
        if isinstance(want, Mapping):
            if want and not isinstance(value, Mapping):
                return f"{prefix}{key} is a table of options, got {value!r}"
            if want:
                problem = type_problem(want, value, f"{prefix}{key}.")
                if problem:
                    return problem
            continue
        kind = _kind_of(want)
        if kind is None:
            continue
        if not _has_kind(value, kind):
            return f"{prefix}{key} must be {_TYPE_NAMES[kind]}, got {value!r}"
        item_kind = _kind_of(want[0]) if kind is list and want else None
        if item_kind is not None and not all(_has_kind(v, item_kind) for v in value):
            return f"{prefix}{key} must be a list of {_PLURAL_NAMES[item_kind]}, got {value!r}"
    return None


def check_types(default: Mapping, given: Mapping, where: str, prefix: str = "") -> None:
    """Each given value has the type of its default (see :func:`type_problem`)."""
    problem = type_problem(default, given, prefix)
    if problem:
        raise ConfigError(f"{where}: {problem}")


def lookup(conf: Mapping, dotted: str) -> Any:
    """The value at a dotted key (``vad.hangover_ms``), None where there is none."""
    value: Any = conf
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def limit_problem(conf: Mapping, limits: Limits, prefix: str = "") -> tuple[str, str] | None:
    """(dotted key, what is wrong) for the first value of ``conf`` outside its limits (a
    list: any of its items), e.g. ``("epochs", "epochs = -1 is out of range (must be >=
    1)")``; None when every value is in range. The types must have been checked."""
    for dotted, (low, high) in limits.items():
        value = lookup(conf, dotted)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            if (low is not None and v < low) or (high is not None and v > high):
                bound = (f"between {low} and {high}" if low is not None and high is not None
                         else f">= {low}" if low is not None else f"<= {high}")
                return dotted, (f"{prefix}{dotted} = {value!r} is out of range (must be "
                                f"{bound})")
    return None


def check_limits(conf: Mapping, limits: Limits, sources: list[tuple[str, Mapping]] = ()) -> None:
    """Every limited value in range; the error names the file or --set that gave it."""
    found = limit_problem(conf, limits)
    if found is None:
        return
    dotted, problem = found
    where = next((w for w, given in reversed(sources) if lookup(given, dotted) is not None),
                 "the defaults")
    raise ConfigError(f"{where}: {problem}")


def check_known(default: Mapping, given: Mapping, where: str, prefix: str = "") -> None:
    for key, value in given.items():
        if key not in default:
            known = ", ".join(sorted(default)) or "(none)"
            raise ConfigError(f"{where}: unknown option {prefix}{key!r} (known: {known})")
        if isinstance(value, Mapping) and isinstance(default[key], Mapping) and default[key]:
            check_known(default[key], value, where, prefix=f"{prefix}{key}.")


def _flatten(record: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_keys(old: Mapping, new: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    """The keys (nested ones dotted: ``vad.hangover_ms``) whose values differ, sorted; with
    ``keys`` only those top-level keys are compared."""
    if keys is not None:
        keys = list(keys)
        old = {k: old.get(k) for k in keys}
        new = {k: new.get(k) for k in keys}
    flat_old, flat_new = _flatten(old), _flatten(new)
    return sorted(k for k in flat_old.keys() | flat_new.keys()
                  if flat_old.get(k) != flat_new.get(k))


def config_fingerprint(conf: Mapping) -> str:
    """Canonical JSON text of a configuration, for comparing two runs."""
    return json.dumps(conf, sort_keys=True, separators=(",", ":"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)  # JSON numbers and plain strings are valid TOML
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as a TOML value")


def dump_toml(conf: Mapping, header: str = "", _table: str = "") -> str:
    """TOML text of a configuration of scalars, lists and nested tables (what :func:`load_toml`
    reads back equal); ``header`` is written first as ``#`` comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    scalars = {k: v for k, v in conf.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in conf.items() if isinstance(v, Mapping)}
    if _table and (scalars or not tables):
        lines.append(f"[{_table}]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    for key, value in tables.items():
        lines += ["", dump_toml(value, _table=f"{_table}.{key}" if _table else key).strip("\n")]
    return "\n".join(lines) + "\n"
