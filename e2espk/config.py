"""Command configs: one dataclass per command fills its argparse parser.

Precedence is dataclass defaults < ``--config file.yaml`` < command-line flags. Each field's
``help`` metadata is the documentation of the flag. Unknown keys in a config file are errors
that list the valid keys, never silently accepted.

Configs compose: a command's config holds the configs of its parts (``part``), and each part's
fields become the command's flags and config keys as if declared on the command itself. The
options of a command are therefore one flat namespace (``flat_fields``): flags, YAML files,
``config_to_dict`` (checkpoints, run ``config.yaml``) and ``from_flat`` all use the flat names,
so a field moving into a part changes nothing a user sees. An option that is renamed keeps its
old flag and key (``option(renamed_from=...)``), accepted with a FutureWarning naming the new one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from e2espk.errors import ConfigError
from e2espk.fileio import write_text_atomic

C = TypeVar("C")
PART = "part"  # field metadata key of a part


def option(default: Any = dataclasses.MISSING, help: str = "", **flag: Any) -> Any:
    """A dataclass field that becomes a command-line flag.

    Args:
        default: the default value (use ``default_factory`` in ``flag`` for lists).
        help: the flag's documentation.
        **flag: ``aliases`` (extra flag spellings), ``choices``, ``metavar``, ``positional``,
            ``default_factory``, ``renamed_from`` (earlier names of the option: their flag and
            config key still work, with a FutureWarning that names the current one).
    """
    factory = flag.pop("default_factory", dataclasses.MISSING)
    metadata = {"help": help, **flag}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def part(cls: type, help: str) -> Any:
    """A field holding the config of one part of a command (its model, optimiser, ...).

    The part's options are the command's options: same flags, same flat config keys, listed
    under their own heading in ``--help``. Code reaches them through the part
    (``config.optim.lr``), and the part's factory receives the part alone.
    """
    return dataclasses.field(default_factory=cls, metadata={PART: True, "help": help})


def is_part(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get(PART))


@dataclasses.dataclass(frozen=True)
class FlatField:
    """One option of a composed config: its flat name and the parts it sits in."""

    name: str  # flag ``--name-with-dashes``, config key and ``config_to_dict`` key
    parts: tuple[str, ...]  # attribute path from the command's config; () on the config itself
    field: dataclasses.Field
    annotation: Any


@functools.cache
def flat_fields(config_cls: type) -> tuple[FlatField, ...]:
    """Every option of ``config_cls``, parts expanded in declaration order.

    Raises:
        TypeError: two parts (or a part and the config) declare the same option name.
    """
    try:
        hints = typing.get_type_hints(config_cls)
    except NameError:  # annotations only a type checker resolves: parsing never needs them
        hints = {}
    found: list[FlatField] = []
    for field in dataclasses.fields(config_cls):
        if is_part(field):
            part_cls = typing.cast(type, field.default_factory)
            found += [
                dataclasses.replace(inner, parts=(field.name, *inner.parts))
                for inner in flat_fields(part_cls)
            ]
        else:
            found.append(FlatField(field.name, (), field, hints.get(field.name, field.type)))
    names = [flat.name for flat in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise TypeError(f"{config_cls.__name__}: option(s) {', '.join(twice)} declared twice")
    return tuple(found)


def option_names(config_cls: type) -> list[str]:
    """The flat option names of ``config_cls`` (its flags without ``--``, its config keys)."""
    return [flat.name for flat in flat_fields(config_cls)]


def warn_renamed(old: str, new: str, where: str = "") -> None:
    """The FutureWarning of an option given under its earlier name."""
    warnings.warn(
        f"{where}{old} is renamed {new}; the old name will stop working in a future version",
        FutureWarning,
        stacklevel=3,
    )


def upgrade_keys(
    config_cls: type, values: Mapping[str, Any], where: str | None = ""
) -> dict[str, Any]:
    """``values`` with options given under an earlier name moved to their current name.

    Args:
        where: prefix of the warning (e.g. ``"run.yaml: "``); None maps quietly, for records
            written before the rename (a checkpoint's options, a search's state).

    Raises:
        ConfigError: an option is given under both names (only when ``where`` is not None).
    """
    renamed = {
        old: flat.name
        for flat in flat_fields(config_cls)
        for old in flat.field.metadata.get("renamed_from", ())
    }
    upgraded: dict[str, Any] = {}
    for key, value in values.items():
        new = renamed.get(key)
        if new is None:
            upgraded[key] = value
        elif new in values:
            if where is not None:
                raise ConfigError(f"{where}give {new} or its old name {key}, not both")
        else:
            if where is not None:
                warn_renamed(key, new, where)
            upgraded[new] = value
    return upgraded


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


class _RenamedFlag(argparse.Action):
    """An option's earlier flag: stores under the option's name and warns once per parser."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        self.current = kwargs.pop("current")
        self.warned = False
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        if not self.warned:
            self.warned = True
            warn_renamed(option_string or self.option_strings[0], self.current)
        setattr(namespace, self.dest, values)


def _flag_kwargs(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    meta = dict(field.metadata)
    inner, _ = _unwrap_optional(annotation)
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    kwargs: dict[str, Any] = {"help": meta.get("help", ""), "dest": field.name, "default": default}
    if "choices" in meta:
        kwargs["choices"] = meta["choices"]
    if "metavar" in meta:
        kwargs["metavar"] = meta["metavar"]
    if inner is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(inner) in (list, tuple):
        (item_type, *_) = typing.get_args(inner) or (str,)
        kwargs.update(nargs="*" if field.metadata.get("allow_empty") else "+", type=item_type)
    else:
        kwargs["type"] = inner if inner in (int, float, str) else str
    return kwargs


def _add_field(parser: Any, field: dataclasses.Field, annotation: Any) -> None:
    """The field's flag, and a hidden flag for each name it had before (``renamed_from``)."""
    kwargs = _flag_kwargs(field, annotation)
    flag = _flag_name(field.name)
    parser.add_argument(flag, *field.metadata.get("aliases", ()), **kwargs)
    for old in field.metadata.get("renamed_from", ()):
        if kwargs.get("action") is not None:
            raise TypeError(f"{field.name}: renamed_from is not supported for on/off flags")
        hidden = {"help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
        parser.add_argument(_flag_name(old), **kwargs | hidden, action=_RenamedFlag, current=flag)


def build_parser(
    config_cls: type,
    description: str,
    prog: str | None = None,
    config_flag: bool = True,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per option of ``config_cls`` (plus ``--config``); the
    options of each part are listed under the part's name."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        add_help=add_help,
    )
    if config_flag:
        parser.add_argument("--config", help="YAML file of options; flags given here override it")
    groups: dict[str, Any] = {}
    parts = {field.name: field for field in dataclasses.fields(config_cls) if is_part(field)}
    for flat in flat_fields(config_cls):
        target: Any = parser
        if flat.parts:
            top = flat.parts[0]
            if top not in groups:
                groups[top] = parser.add_argument_group(top, parts[top].metadata.get("help"))
            target = groups[top]
        _add_field(target, flat.field, flat.annotation)
    return parser


def load_config_file(path: str | Path, config_cls: type) -> dict[str, Any]:
    """Read a YAML config of flat ``option: value`` keys and check them against the options of
    ``config_cls`` (earlier names of renamed options are mapped, with a FutureWarning)."""
    path = Path(path)
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(payload, dict):
        raise ConfigError(
            f"{path}: expected a mapping of option: value, got {type(payload).__name__}"
        )
    normalised = {str(key).replace("-", "_"): value for key, value in payload.items()}
    normalised = upgrade_keys(config_cls, normalised, f"{path}: ")
    valid = set(option_names(config_cls))
    unknown = sorted(set(normalised) - valid)
    if unknown:
        raise ConfigError(
            f"{path}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
        )
    return normalised


def _coerce(annotation: Any, value: Any) -> Any:
    """Lists from YAML or argparse as the tuple a field declares (and tuples as lists)."""
    inner, _ = _unwrap_optional(annotation)
    origin = typing.get_origin(inner)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is list and isinstance(value, tuple):
        return list(value)
    return value


def _checked_flat(config_cls: type, values: Mapping[str, Any], where: str | None) -> dict[str, Any]:
    values = upgrade_keys(config_cls, values, where)
    known = {flat.name: flat for flat in flat_fields(config_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where or ''}unknown {config_cls.__name__} option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(known))}"
        )
    return {name: _coerce(known[name].annotation, value) for name, value in values.items()}


def _build(config_cls: type[C], values: Mapping[str, Any]) -> C:
    kwargs = {
        field.name: _build(typing.cast(type, field.default_factory), values)
        if is_part(field)
        else values[field.name]
        for field in dataclasses.fields(config_cls)  # type: ignore[arg-type]
        if is_part(field) or field.name in values
    }
    return config_cls(**kwargs)


def from_flat(config_cls: type[C], values: Mapping[str, Any], where: str | None = "") -> C:
    """A composed config from one flat mapping ``option: value`` (the form of flags, YAML files
    and ``config_to_dict``); options left out keep their defaults.

    Args:
        where: prefix of errors and of the warning for an option's earlier name; None maps
            earlier names quietly (records written before a rename).

    Raises:
        ConfigError: an unknown option (the message lists the valid ones).
    """
    return _build(config_cls, _checked_flat(config_cls, values, where))


def replace_flat(config: C, changes: Mapping[str, Any], where: str | None = "") -> C:
    """``dataclasses.replace`` by flat option names: ``config`` with ``changes`` applied in
    whichever part holds each option (every part is a new object)."""
    values = _checked_flat(type(config), changes, where)

    def replaced(current: Any) -> Any:
        kwargs = {
            field.name: replaced(getattr(current, field.name))
            if is_part(field)
            else values[field.name]
            for field in dataclasses.fields(current)
            if is_part(field) or field.name in values
        }
        return dataclasses.replace(current, **kwargs)

    return typing.cast(C, replaced(config))


def _parse(
    config_cls: type[C],
    argv: Sequence[str] | None,
    description: str,
    prog: str | None,
    explicit: bool,
) -> tuple[C, set[str]]:
    parser = build_parser(config_cls, description, prog)
    known, _ = parser.parse_known_args(argv)
    from_file = load_config_file(known.config, config_cls) if known.config else {}
    parser.set_defaults(**from_file)
    namespace = parser.parse_args(argv)
    values = {name: getattr(namespace, name) for name in option_names(config_cls)}
    try:
        config = from_flat(config_cls, values)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    given: set[str] = set()
    if explicit:
        probe = build_parser(config_cls, description, prog)
        for action in probe._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, _RenamedFlag):
                action.warned = True  # the parse above has warned
        probed, _ = probe.parse_known_args(argv)
        given = (set(vars(probed)) - {"config"}) | set(from_file)
    return config, given


def parse_config(
    config_cls: type[C], argv: Sequence[str] | None, description: str, prog: str | None = None
) -> C:
    """Build a ``config_cls`` from defaults, an optional ``--config`` YAML file and flags."""
    return _parse(config_cls, argv, description, prog, explicit=False)[0]


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (paths as strings), for YAML/JSON/checkpoints:
    one flat mapping ``option: value``, parts expanded (``from_flat`` reads it back)."""
    flat: dict[str, Any] = {}
    config_cls: type = type(config)
    for field in flat_fields(config_cls):
        owner = functools.reduce(getattr, field.parts, config)
        flat[field.name] = _plain(getattr(owner, field.name))
    return flat


def save_config(config: Any, path: str | Path) -> Path:
    """Save the resolved config as YAML (atomically), so every run records what it ran with."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def parse_explicit(
    config_cls: type[C], argv: Sequence[str], description: str, prog: str | None = None
) -> tuple[C, set[str]]:
    """Like ``parse_config``, and also return which options the user set (file or flags).

    A hyperparameter search uses this to leave the user's fixed choices out of the space.
    """
    return _parse(config_cls, argv, description, prog, explicit=True)
