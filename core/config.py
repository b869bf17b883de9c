"""Serializable configs: objects that can be rebuilt exactly from plain data.

Each configurable class records the keyword arguments it was built with; a
checkpoint stores ``obj.config()`` (plain JSON-able data, never pickled source)
and ``from_config`` rebuilds the object through a name registry that refuses
duplicate names.
"""

from __future__ import annotations

from typing import Any

_CLASSES: dict[str, type] = {}


class Configurable:
    """Mixin: subclasses are registered by class name and rebuildable from ``config()``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name in _CLASSES and _CLASSES[name] is not cls:
            raise ValueError(f"a configurable class named {name!r} is already registered")
        _CLASSES[name] = cls

    def _set_config(self, **kwargs: Any) -> None:
        self._config_kwargs = dict(kwargs)

    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this object with ``from_config``."""
        return {"class": type(self).__name__, "kwargs": dict(self._config_kwargs)}


def from_config(cfg: dict[str, Any]) -> Any:
    """Rebuild an object from ``obj.config()``."""
    try:
        cls = _CLASSES[cfg["class"]]
    except KeyError:
        raise ValueError(
            f"unknown configurable class {cfg.get('class')!r}; known: {sorted(_CLASSES)}"
        ) from None
    return cls(**cfg["kwargs"])
