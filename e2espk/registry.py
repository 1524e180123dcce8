"""Name -> constructor registries for the pluggable parts (backbones, fusion, heads, ...).

A part registers itself where it is defined; configs name it by string. An unknown name raises
a ConfigError that lists the valid names, so a typo in a flag is caught before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from e2espk.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small named collection of constructors (classes or functions).

    Args:
        kind: what the entries are ("backbone", "fusion", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (and optional aliases)."""

        def decorate(entry: T) -> T:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[name] = entry
            for alias in aliases:
                self._aliases[alias] = name
            return entry

        return decorate

    def canonical(self, name: str) -> str:
        """Resolve an alias to its registered name; raise ConfigError for unknown names."""
        key = self._aliases.get(str(name), str(name))
        if key not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return key

    def get(self, name: str) -> T:
        """The entry registered under ``name`` (or one of its aliases)."""
        return self._entries[self.canonical(name)]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the entry registered under ``name`` with ``kwargs``."""
        constructor = self.get(name)
        if not callable(constructor):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return constructor(**kwargs)

    def names(self, sort: bool = True) -> list[str]:
        """Registered names (aliases excluded), sorted or (``sort=False``) in the order they
        were registered."""
        return sorted(self._entries) if sort else list(self._entries)

    def choices(self) -> list[str]:
        """Registered names and aliases, for argparse ``choices``."""
        return sorted([*self._entries, *self._aliases])

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
