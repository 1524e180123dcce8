"""Command configs: one dataclass per command fills its argparse parser.

Precedence is dataclass defaults < ``--config file.yaml`` < command-line flags. Each field's
``help`` metadata is the documentation of the flag. Unknown keys in a config file are errors
that list the valid keys, never silently accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from e2espk.errors import ConfigError
from e2espk.fileio import write_text_atomic

C = TypeVar("C")


def option(default: Any = dataclasses.MISSING, help: str = "", **flag: Any) -> Any:
    """A dataclass field that becomes a command-line flag.

    Args:
        default: the default value (use ``default_factory`` in ``flag`` for lists).
        help: the flag's documentation.
        **flag: ``aliases`` (extra flag spellings), ``choices``, ``metavar``, ``positional``,
            ``default_factory``.
    """
    factory = flag.pop("default_factory", dataclasses.MISSING)
    metadata = {"help": help, **flag}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field, annotation: Any) -> None:
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
    flags = [_flag_name(field.name), *meta.get("aliases", ())]
    parser.add_argument(*flags, **kwargs)


def build_parser(
    config_cls: type,
    description: str,
    prog: str | None = None,
    config_flag: bool = True,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``config_cls`` (plus ``--config``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        add_help=add_help,
    )
    if config_flag:
        parser.add_argument("--config", help="YAML file of options; flags given here override it")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        _add_field(parser, field, hints[field.name])
    return parser


def load_config_file(path: str | Path, config_cls: type) -> dict[str, Any]:
    """Read a YAML config and check its keys against the fields of ``config_cls``."""
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
    valid = {field.name for field in dataclasses.fields(config_cls)}
    normalised = {str(key).replace("-", "_"): value for key, value in payload.items()}
    unknown = sorted(set(normalised) - valid)
    if unknown:
        raise ConfigError(
            f"{path}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
        )
    return normalised


def parse_config(
    config_cls: type[C], argv: Sequence[str] | None, description: str, prog: str | None = None
) -> C:
    """Build a ``config_cls`` from defaults, an optional ``--config`` YAML file and flags."""
    parser = build_parser(config_cls, description, prog)
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_file(known.config, config_cls))
    namespace = parser.parse_args(argv)
    values = {
        field.name: getattr(namespace, field.name)
        for field in dataclasses.fields(config_cls)  # type: ignore[arg-type]
    }
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (paths as strings), for YAML/JSON/checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(config).items()}


def save_config(config: Any, path: str | Path) -> Path:
    """Save the resolved config as YAML (atomically), so every run records what it ran with."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def parse_explicit(
    config_cls: type[C], argv: Sequence[str], description: str, prog: str | None = None
) -> tuple[C, set[str]]:
    """Like ``parse_config``, and also return which options the user set (file or flags).

    A hyperparameter search uses this to leave the user's fixed choices out of the space.
    """
    config = parse_config(config_cls, argv, description, prog)
    probe = build_parser(config_cls, description, prog)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = probe.parse_known_args(argv)
    explicit = set(vars(namespace)) - {"config"}
    config_file = getattr(namespace, "config", None)
    if config_file:
        explicit |= set(load_config_file(config_file, config_cls))
    return config, explicit
