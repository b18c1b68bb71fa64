"""Registries: for each choice a plan makes by name (network, loss, optimiser, schedule, normalisation layer), one
table from the name to what implements it.

The plan validates its names against these tables and the code that acts on a name looks it up in the same
table, so there is one list of choices and an unknown name is always an error naming the plan key and the known
names, never a silent fallback. Built-in entries are registered as ``"module:attribute"`` strings and imported
on first use, so that reading and validating a plan does not import torch. A user's own entries are registered
with the object itself, from a module named in ``$DEEPWML_PLUGINS`` or in the ``deepwml.plugins`` entry-point
group (see docs/extending.md).
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Dict, Generic, List, Optional, TypeVar, Union

from deepwml.utils.errors import DeepWMLError, PlanError

T = TypeVar("T")
#: comma-separated modules imported before the first look-up (they register their entries on import)
PLUGIN_ENV = "DEEPWML_PLUGINS"
#: entry-point group of installed packages that register entries
ENTRY_POINT_GROUP = "deepwml.plugins"

_plugins_loaded = False


class Registry(Generic[T]):
    """Names of one kind of choice and what implements each (an object, or a lazy ``"module:attribute"``)."""

    def __init__(self, kind: str, plan_key: str) -> None:
        self.kind = kind
        self.plan_key = plan_key
        self._entries: Dict[str, Union[str, T]] = {}

    def register(self, name: str, entry: Any = None, *, replace: bool = False) -> Any:
        """Add ``name``; without ``entry``, a decorator. A name registered twice is an error unless ``replace``."""
        if entry is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, replace=replace)
                return obj
            return decorator
        if not isinstance(name, str) or not name.strip():
            raise DeepWMLError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries and not replace:
            raise DeepWMLError(f"{self.kind} {name!r} is already registered; pass replace=True to override it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests, or a plugin withdrawing an entry)."""
        self._entries.pop(name, None)

    def names(self) -> List[str]:
        """Every registered name, sorted."""
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def problem(self, name: Any) -> Optional[str]:
        """None when ``name`` is registered, else the message a plan error gives."""
        if isinstance(name, str) and name in self:
            return None
        return f"{self.plan_key} {name!r} is not a registered {self.kind} (known: {', '.join(self.names())})"

    def is_builtin(self, name: str) -> bool:
        """True when ``name`` is one of DeepWML's own entries (not added or replaced by a plugin)."""
        entry = self._entries.get(name) if name in self else None
        module = entry.partition(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
        return module.startswith("deepwml.")

    def get(self, name: str) -> T:
        """What ``name`` stands for; an unknown name is a PlanError naming the plan key and the known names."""
        message = self.problem(name)
        if message:
            raise PlanError(message)
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = _resolve(entry)
            self._entries[name] = entry
        return entry


def _resolve(path: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_plugins() -> None:
    """Import the modules of $DEEPWML_PLUGINS and the ``deepwml.plugins`` entry points, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # before importing: a plugin that looks names up must not recurse
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        _import_plugin(module, lambda m=module: importlib.import_module(m))
    for ep in _entry_points():
        _import_plugin(f"{ep.name} = {ep.value}", ep.load)


def _entry_points() -> List[Any]:
    """Installed entry points of ENTRY_POINT_GROUP (the API differs before Python 3.10)."""
    from importlib import metadata

    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # pragma: no cover - Python 3.9


def _import_plugin(what: str, load: Callable[[], Any]) -> None:
    """Import one plugin; a failure is one line naming it."""
    try:
        load()
    except Exception as e:  # noqa: BLE001 - any failure of foreign code becomes one clear line
        raise DeepWMLError(f"plugin {what} (from ${PLUGIN_ENV} or the {ENTRY_POINT_GROUP} entry points) failed to "
                           f"import: {type(e).__name__}: {e}") from None


NETWORKS: "Registry[Any]" = Registry("network architecture", "network.architecture")
NORMS: "Registry[Any]" = Registry("normalisation layer", "network.norm")
LOSSES: "Registry[Any]" = Registry("loss", "training.loss")
OPTIMIZERS: "Registry[Any]" = Registry("optimiser", "training.optimizer")
LR_SCHEDULES: "Registry[Any]" = Registry("learning-rate schedule", "training.lr_schedule")

# the built-in entries, imported on first use
NETWORKS.register("unet2d", "deepwml.models.unet2d_spec:UNet2DSpec")
NETWORKS.register("resenc_unet2d", "deepwml.models.resenc_spec:ResEncUNet2DSpec")
for _name in ("none", "batch", "instance", "batch_deep_instance"):
    NORMS.register(_name, f"deepwml.models.norms:{_name.upper()}")
for _name in ("bce_dice", "bce", "dice", "bce_dice_blob", "ce_dice", "ce"):
    LOSSES.register(_name, f"deepwml.models.losses:{_name}")
for _name in ("adam", "adamw", "sgd"):
    OPTIMIZERS.register(_name, f"deepwml.models.optimizers:{_name}")
for _name in ("constant", "poly", "cosine"):
    LR_SCHEDULES.register(_name, f"deepwml.models.schedules:{_name}")
