"""Lazy public names for a package's ``__init__`` (PEP 562): import a name's module on first use.

``import blip2core`` must stay cheap (no torch, no plugin) for applications that embed it and for
``blip2 --help``; ``from blip2core import Pipeline`` still works, it just imports
``blip2core.pipeline`` (and torch) at that moment. A module using this keeps its eager imports under
``if TYPE_CHECKING:`` so that type checkers and IDEs still see every name, and
``tests/test_lazy_imports.py`` checks that those imports and the mapping given here agree.

This module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    module_name: str, exports: Mapping[str, str], module_globals: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of module ``module_name``.

    Args:
        module_name: the module's ``__name__``.
        exports: public name -> the module that defines it (``{"Pipeline": "blip2core.pipeline"}``).
        module_globals: the module's ``globals()``; a name is stored there once imported, so the
            next access is a plain attribute lookup.

    ``__getattr__`` also imports a submodule of a package on first access (``blip2core.loading``),
    as an eager ``__init__`` that imported it used to make available.
    """

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is not None:
            value = getattr(importlib.import_module(source), name)
            module_globals[name] = value
            return value
        if "__path__" in module_globals and not name.startswith("__"):
            submodule = f"{module_name}.{name}"
            if importlib.util.find_spec(submodule) is not None:
                return importlib.import_module(submodule)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(module_globals) | set(exports))

    return __getattr__, __dir__
