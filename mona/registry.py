"""Methods registered by name, discovered from `mona.methods` and the `baselines` package.

Adding a method is one module with a `@register("name")` class; the Snakefile, the engine and
the tables ask this registry which methods exist and which stages each one trains.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mona.method import Method

_METHODS: dict[str, type[Method]] = {}
_PACKAGES = ("mona.methods", "baselines")
_loaded = False


def register(name: str):
    """Class decorator: make a `Method` subclass available under `name`."""

    def decorate(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name]} and {cls})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def _import_package_modules(package_name: str) -> None:
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")


def load_plugin(path_or_module: str) -> None:
    """Import a method defined outside the package (a `.py` file or a module name)."""
    if path_or_module.endswith(".py"):
        path = Path(path_or_module).resolve()
        module_name = f"mona_plugin_{path.stem}"
        if module_name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import method plugin {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(path_or_module)


def load_methods(plugins: list[str] | tuple[str, ...] = ()) -> dict[str, type[Method]]:
    """Import every built-in method module once, plus any plugins; return the registry."""
    global _loaded
    if not _loaded:
        for package_name in _PACKAGES:
            _import_package_modules(package_name)
        _loaded = True
    for plugin in plugins:
        load_plugin(plugin)
    return dict(_METHODS)


def get_method(name: str, plugins: list[str] | tuple[str, ...] = ()) -> type[Method]:
    methods = load_methods(plugins)
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(methods))}")
    return methods[name]
