"""User functions named on the command line as `package.module:function` (labels, filters, masks, models)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def load_callable(spec: str) -> Callable:
    """`package.module:function` -> the function."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:function', got {spec!r}")
    try:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load {spec!r}: {error}") from error
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target


def callable_name(function: Callable) -> str:
    """`module:qualname` of a function, as `load_callable` takes it (for metadata.json)."""
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"
