"""The one config system: every YAML config file and every `--set key.path=value` is read here.

A config is built in layers (packaged defaults <- a preset <- a YAML file <- overrides), and every key
remembers where it was set: `my.yaml:4:3` (file, line, column) or the label of the layer
("overrides", "--scale large"). So an unknown key, a wrong type or bad YAML is reported at its place,
every problem at once, as one ConfigError. The three configs say only what their keys are:
stagewise/runconfig.py (`stagewise run`), train/config.py (`stagewise train`) and
stagewise/experiments/config.py (`stagewise experiment`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from pathlib import Path

import yaml
from stagewise.curate.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads `1e-5` as a string; a learning rate written that way is a
    number to every reader, so it is one here (as in YAML 1.2)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."))


def parse_yaml(text: str, where: str) -> tuple[dict, dict[str, str]]:
    """A YAML mapping and, for every dotted key in it, `where:line:column` of that key.
    Bad YAML or a document that is not a mapping raises ConfigError at its line and column."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        # An unclosed bracket or quote is found at the end of the file; say where it opened.
        opened = (f"; {exc.context} at {where}:{context.line + 1}:{context.column + 1}"
                  if context is not None and getattr(exc, "context", None) else "")
        raise ConfigError(f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc}{opened})",
                          fix="fix the YAML there (a value with ': ' or '#' in it needs quotes)") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        mark = node.start_mark
        raise ConfigError(f"{where}:{mark.line + 1}:{mark.column + 1}: expected a mapping of keys to values, "
                          f"got a {type(data).__name__}", fix="write one `key: value` per line")
    origins: dict[str, str] = {}
    _key_positions(node, "", where, origins)
    return data, origins


def _key_positions(node, prefix: str, where: str, out: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = f"{where}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
            _key_positions(value_node, key + ".", where, out)


def read_yaml(path: str | os.PathLike, *, fix: str = "pass an existing YAML file to --config"
              ) -> tuple[dict, dict[str, str]]:
    """A YAML config file (see parse_yaml); a missing file is a ConfigError with `fix`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", fix=fix)
    return parse_yaml(p.read_text(), str(p))


def parse_sets(pairs, *, option: str = "--set", example: str = "probe.num_samples=8") -> dict:
    """`["probe.num_samples=8", "trl.num_iterations=2"]` -> `{"probe": {"num_samples": 8}, "trl": {...}}`.

    The one parser of KEY=VALUE options (`--set`, `--backend-arg`): a dotted key builds nested mappings;
    a value is YAML (`8`, `1e-5`, `true`, `[1, 4]`, `{a: 1}`), an empty one is the empty string."""
    out: dict = {}
    for text in pairs or ():
        key, sep, value = str(text).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {text!r} must look like KEY=VALUE, e.g. {option} {example}")
        try:
            parsed = yaml.load(value, Loader=_Loader) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{option} {text!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})",
                              fix=f"quote it, e.g. {key}='\"{value}\"'") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{option} {text!r}: {part} was already given a value, not a mapping")
            node = child
        node[parts[-1]] = parsed
    return out


def overrides(sets, **flags) -> dict:
    """A command's overrides: its `--set` values with its own flags laid over them (a flag left out, None,
    sets nothing), so `--set max_steps=3` and `--max-steps 5` never collide."""
    return merge(parse_sets(sets), {key: value for key, value in flags.items() if value is not None})


def merge(base: dict, update: dict | None) -> dict:
    """`update` laid over `base`, mapping into mapping; neither is changed."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dotted_keys(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict):
            out += dotted_keys(value, f"{prefix}{key}.")
    return out


def section(values: dict, origins: dict[str, str], name: str) -> tuple[dict, dict[str, str]]:
    """The `name:` mapping of a file and the positions inside it (a `stagewise run` file read by one stage)."""
    head = name + "."
    return values[name], {k[len(head):]: v for k, v in origins.items() if k.startswith(head)}


class Layers:
    """A config merged from layers, remembering where each key was set."""

    def __init__(self, defaults: dict):
        self.data = copy.deepcopy(defaults)
        self.origins: dict[str, str] = {}

    def add(self, values: dict | None, origin: str | dict[str, str]) -> None:
        """Lay `values` over the config; `origin` names the layer (every key gets it) or maps dotted keys to
        their places (parse_yaml's positions)."""
        if not values:
            return
        self.data = merge(self.data, values)
        self.origins.update(origin if isinstance(origin, dict) else dict.fromkeys(dotted_keys(values), origin))

    def where(self, key: str) -> str | None:
        while key:
            if key in self.origins:
                return self.origins[key]
            key = key.rpartition(".")[0]
        return None

    def fail(self, what: str, problems: list[tuple[str, str]], fix: str | None = None) -> None:
        """Raise one ConfigError for every (dotted key, problem), each at the place that set the key."""
        if not problems:
            return
        located = []
        for key, text in dict.fromkeys(problems):  # two checks may find the same problem: say it once
            where = self.where(key)
            located.append(f"{where}: {text}" if where else text)
        raise ConfigError(f"{what}: " + "; ".join(located), fix=fix)


def unknown_key(key: str, options, prefix: str = "") -> str:
    """`unknown key 'sft.max_stepz' (did you mean sft.max_steps?)`."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(key), options, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(options)}"
    return f"unknown key '{prefix}{key}' ({hint})"


def unknown_keys(values: dict, known, prefix: str = "", into=()) -> list[tuple[str, str]]:
    """Keys of `values` not in `known`; for the sections named in `into`, their keys too (against the
    mapping `known[section]`)."""
    problems = []
    for key, value in values.items():
        if key not in known:
            problems.append((f"{prefix}{key}", unknown_key(key, known, prefix)))
        elif key in into and isinstance(value, dict) and isinstance(known[key], dict):
            problems += unknown_keys(value, known[key], f"{prefix}{key}.", into)
    return problems


def type_problems(values: dict, defaults: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Wrong kinds of value against the defaults' kinds: a number must be a number, a flag true or false, a
    list a list, a section a mapping. null passes everywhere (it means "not set"), and so does any value
    for a key whose default is null or text (their checks know the accepted values)."""
    problems = []
    for key, value in values.items():
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if value is None or default is None:
            continue
        name = f"{prefix}{key}"
        if isinstance(default, dict):
            if isinstance(value, dict):
                problems += type_problems(value, default, name + ".")
            else:
                problems.append((name, f"{name} must be a mapping (got {value!r})"))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append((name, f"{name}={value!r} must be true or false"))
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append((name, f"{name}={value!r} must be a number"))
        elif isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
            problems.append((name, f"{name}={value!r} must be a list, e.g. [{value!r}]"))
    return problems


# ------------------------------------------------------------------------------ dataclass configs


def dataclass_fields(obj) -> dict:
    """A config dataclass as {field: value}, nested config dataclasses as nested mappings."""
    return {f.name: dataclass_fields(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name))
            else getattr(obj, f.name) for f in dataclasses.fields(obj)}


def build_dataclass(base, config: str | os.PathLike | None, overrides: dict | None, *, what: str, fix: str):
    """`base` (a frozen config dataclass) <- a YAML file <- overrides, checked key by key against its fields
    (nested dataclasses are sections); lists become the tuples the dataclass holds."""
    fields = dataclass_fields(base)
    layers = Layers({})
    if config is not None:
        layers.add(*read_yaml(config))
    layers.add(overrides, "overrides")
    nested = [k for k, v in fields.items() if isinstance(v, dict)]
    layers.fail(what, unknown_keys(layers.data, fields, into=nested) + type_problems(layers.data, fields), fix)
    return _replace(base, layers.data)


def _replace(obj, values: dict):
    changes = {}
    for key, value in values.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            value = _replace(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = _tuples(value)
        changes[key] = value
    return dataclasses.replace(obj, **changes)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
