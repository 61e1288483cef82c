"""A name-to-object registry with explicit names, case-insensitive lookup and suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from .errors import PerlclipError


class RegistryError(PerlclipError, KeyError):
    """Raised for an unknown or duplicate registry name.

    `KeyError` quotes its message when printed, so `__str__` returns the plain text.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry:
    """Maps explicit names to objects (trainer classes, dataset classes).

    Names keep the spelling they were registered with, which is what listings show. Lookups
    ignore case, so `--trainer perl` finds `PERL`. Registering a name twice raises, because a
    silent replacement would make results depend on import order.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._by_lower: dict[str, str] = {}

    def register(self, name: str, obj: Any = None, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
        """Register `obj` under `name` (and `aliases`); used as a decorator when `obj` is None."""

        def _add(target: Any) -> Any:
            for key in (name, *aliases):
                if not key or not isinstance(key, str):
                    raise RegistryError(f"{self.kind} names must be non-empty strings, got {key!r}")
                lower = key.lower()
                if lower in self._by_lower:
                    existing = self._by_lower[lower]
                    raise RegistryError(
                        f"{self.kind} name {key!r} is already registered (as {existing!r} for "
                        f"{self._objects[existing]!r}); choose another name"
                    )
            self._objects[name] = target
            for key in (name, *aliases):
                self._by_lower[key.lower()] = name
            return target

        if obj is not None:
            return _add(obj)
        return _add

    def canonical_name(self, name: str) -> str:
        """Return the registered spelling of `name`, or raise with the closest match and the list."""
        key = self._by_lower.get(str(name).lower())
        if key is None:
            raise RegistryError(self._unknown_message(name))
        return key

    def get(self, name: str) -> Any:
        """Return the object registered as `name` (any case, or an alias)."""
        return self._objects[self.canonical_name(name)]

    def names(self) -> list[str]:
        """Return the registered names (without aliases), sorted case-insensitively."""
        return sorted(self._objects, key=str.lower)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_lower

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._objects)

    def _unknown_message(self, name: str) -> str:
        candidates = list(self._by_lower)
        close = difflib.get_close_matches(str(name).lower(), candidates, n=1, cutoff=0.5)
        hint = f" Did you mean {self._by_lower[close[0]]!r}?" if close else ""
        available = ", ".join(self.names()) or "(none registered)"
        return f"Unknown {self.kind} {name!r}.{hint} Available: {available}"
