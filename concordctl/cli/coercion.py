"""Typer's parameter coercion, without pydantic for the values that need none.

Typer (0.29+) coerces every parameter through a pydantic ``TypeAdapter``
built on first use: importing pydantic and building the adapters of one
command costs about 100 ms, a third of a ``concordctl send``. Most values on
a command line need nothing of the sort: an unset option (None), a plain
string, a decimal integer or number within its ``min``/``max``, a list of
strings. Those are converted here, to exactly what typer would return; every
other value, and every value that would fail, goes to typer's own coercion
unchanged, so error messages and edge cases stay typer's.

If typer's internals are not what this expects, nothing is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["defer_typer_coercion"]

_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)\Z")
_MISSING = object()


class _DeferredCoercion:
    __slots__ = ("_build",)

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None  # what typer does for None
        quick = _quick(value, param, multi)
        if quick is not _MISSING:
            return quick
        real = self._build()
        param._runtime_param = real
        return real.coerce(value, param=param, ctx=ctx)


def _quick(value: Any, param: Any, multi: bool) -> Any:
    """``value`` converted like typer would, or _MISSING to let typer do it."""
    desc = getattr(param, "type_descriptor", None)
    info = getattr(desc, "parameter_info", None)
    if desc is None or info is None or getattr(info, "parser", None) is not None:
        return _MISSING
    annotation = desc.annotation
    if multi:
        if (
            annotation in (list[str], list[str] | None)
            and isinstance(value, (list, tuple))
            and value
            and all(type(v) is str for v in value)
        ):
            return list(value)
        return _MISSING
    if annotation in (str, str | None):
        return value if type(value) is str else _MISSING
    if getattr(info, "clamp", False):
        return _MISSING
    number: int | float
    if annotation in (int, int | None):
        if type(value) is int:
            number = value
        elif type(value) is str and _INT.match(value):
            number = int(value)
        else:
            return _MISSING
    elif annotation in (float, float | None):
        if type(value) in (int, float) or (type(value) is str and _FLOAT.match(value)):
            number = float(value)
        else:
            return _MISSING
    else:
        return _MISSING
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if (low is not None and number < low) or (high is not None and number > high):
        return _MISSING  # typer says what is wrong
    return number


def defer_typer_coercion() -> None:
    """Install the deferred coercion on typer's parameters (once)."""
    try:
        from typer import _coercion
        from typer.core import _TyperParameter
    except ImportError:  # another typer: nothing to speed up
        return
    if getattr(_TyperParameter, "_concordctl_deferred", False) or not hasattr(
        _TyperParameter, "get_runtime_param"
    ):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is not None:
            return self._runtime_param
        return _DeferredCoercion(lambda: _coercion.build_runtime_param(self.type_descriptor))

    setattr(_TyperParameter, "get_runtime_param", get_runtime_param)  # noqa: B010
    setattr(_TyperParameter, "_concordctl_deferred", True)  # noqa: B010
