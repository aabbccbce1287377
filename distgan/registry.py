"""The family registry: `@register_family` on a Family subclass makes it usable as `model.family: NAME`.

Every module in `distgan/models/` is imported on first lookup, so adding a family is one new file there
(plus a config) and never an edit to the trainer.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from distgan.errors import ConfigError

if TYPE_CHECKING:
    from distgan.family import Family

F = TypeVar("F", bound="type[Family]")
_FAMILIES: dict[str, type[Family]] = {}
_loaded = False


def register_family(cls: F) -> F:
    """Class decorator: register a Family subclass under its `name`."""
    if cls.name in _FAMILIES and _FAMILIES[cls.name] is not cls:
        raise ValueError(f"family '{cls.name}' is registered twice ({_FAMILIES[cls.name]} and {cls})")
    _FAMILIES[cls.name] = cls
    return cls


def _load_builtin_families() -> None:
    global _loaded
    if not _loaded:
        import distgan.models

        for info in pkgutil.iter_modules(distgan.models.__path__):
            importlib.import_module(f"distgan.models.{info.name}")
        _loaded = True


def family_names() -> list[str]:
    """Names of all registered families."""
    _load_builtin_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[Family]:
    """The Family class registered as `name`, or a ConfigError listing the choices."""
    _load_builtin_families()
    if name not in _FAMILIES:
        close = difflib.get_close_matches(name, list(_FAMILIES), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"registered: {', '.join(sorted(_FAMILIES))}"
        raise ConfigError(f"model.family: unknown family '{name}' ({hint})")
    return _FAMILIES[name]
