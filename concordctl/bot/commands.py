"""Commands: the words of a chat, bound to the typed parameters of a handler.

``!deploy web 3 --env prod --force`` calls ``deploy(ctx, service, count=1, *,
env="staging", force=False)`` with ``service="web", count=3, env="prod",
force=True``. Three steps, each a function here:

* :func:`split_command` finds the command name and the text after it;
* :func:`tokenize` cuts that text into words, chat-friendly: a quote opens a
  quoted word only at the start of a word (``it's`` keeps its apostrophe),
  backslashes are literal outside quotes (``\\o/`` survives), and every word
  remembers where it started so ``Rest[str]`` can take the rest verbatim;
* :class:`CommandSignature` (built once, when the file loads, so a handler
  that cannot be bound fails there) converts the words by annotation and
  writes the usage line.

Nothing here does I/O: a ``User`` or ``Channel`` argument comes out of
:meth:`CommandSignature.bind` as a :class:`Lookup` that the runtime resolves
against the server.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import call
from typing import Annotated, Any, Literal, TypeVar

from concordctl.errors import ConcordError, UsageError
from concordctl.protocol import Channel, FullUser

__all__ = [
    "ArgumentError",
    "CommandSignature",
    "Duration",
    "Lookup",
    "Rest",
    "Token",
    "User",
    "parse_command",
    "parse_duration",
    "split_command",
    "tokenize",
]

T = TypeVar("T")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_REST = _Marker("Rest")
_DURATION = _Marker("Duration")

#: ``text: Rest[str]``: the rest of the line after the previous arguments, exactly as typed.
Rest = Annotated[T, _REST]
#: ``delay: Duration``: ``90s``, ``10m``, ``2h``, ``1d`` (or ``1h30m``), as a ``timedelta``.
Duration = Annotated[timedelta, _DURATION]
#: ``who: User``: a username, ``@name`` or id, resolved to the server's user.
User = FullUser


class ArgumentError(ConcordError):
    """A command's words do not fit its parameters; the bot replies with this and the usage.

    A handler may raise it too, for a check only it can make
    (``raise ArgumentError("count: at most 10")``).
    """

    exit_code = 2


#: One word of a command: (its value, where it starts in the text, whether it was quoted).
#: A plain tuple: a command line makes several, and a tuple is the cheapest to make.
Token = tuple[str, int, bool]


# -- words ------------------------------------------------------------------


def split_command(content: str, prefix: str) -> tuple[str, str] | None:
    """``"!Deploy  web x"`` -> ``("deploy", "web x")``; None when it is not a command."""
    if not content.startswith(prefix):
        return None
    body = content[len(prefix) :]
    if not body or body[0].isspace():
        return None
    parts = body.split(None, 1)
    return parts[0].lower(), parts[1] if len(parts) > 1 else ""


def _closing_quote(text: str, quote: str, start: int) -> int:
    """Index of the quote that closes a quoted word opened at ``start`` (-1: none).

    A closing quote must end the word (whitespace or the end follows), so an
    apostrophe inside a later word does not close it.
    """
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            i += 2
            continue
        if ch == quote and (i + 1 == n or text[i + 1].isspace()):
            return i
        i += 1
    return -1


_WORD = re.compile(r"\S+")


def tokenize(text: str) -> list[Token]:
    """Cut ``text`` into words; see the module docstring for the rules."""
    if '"' not in text and "'" not in text:  # most commands: no quoting at all
        return [(m.group(), m.start(), False) for m in _WORD.finditer(text)]
    words: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        ch = text[i]
        if ch in "\"'":
            close = _closing_quote(text, ch, i)
            if close > 0:
                inner = text[i + 1 : close]
                if "\\" in inner:
                    inner = re.sub(r"\\([\\" + ch + "])", r"\1", inner)
                words.append((inner, i, True))
                i = close + 1
                continue
        start = i
        while i < n and not text[i].isspace():
            i += 1
        words.append((text[start:i], start, False))
    return words


def parse_command(content: str, prefix: str) -> tuple[str, list[str], str] | None:
    """``"!deploy web 'a b'"`` -> ``("deploy", ["web", "a b"], "web 'a b'")`` (None: no command)."""
    found = split_command(content, prefix)
    if found is None:
        return None
    name, body = found
    return name, [t[0] for t in tokenize(body)], body.strip()


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|w)", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``1d``, ``1h30m`` or plain seconds; ValueError otherwise."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return timedelta(seconds=float(value))
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        unit = m.group(2).lower()
        unit = "hr" if unit in ("hr", "hrs") else unit[0]
        total += float(m.group(1)) * _UNIT_SECONDS[unit]
        pos = m.end()
    if pos != len(value) or not value:
        raise ValueError(text)
    return timedelta(seconds=total)


# -- converters -------------------------------------------------------------


class _Bad(Exception):
    """A word that does not convert; the message leaves out the parameter's name."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A ``User`` or ``Channel`` argument still to be resolved against the server."""

    kind: Literal["user", "channel"]
    ref: str
    param: str


_TRUE = frozenset(("yes", "true", "on", "1", "y"))
_FALSE = frozenset(("no", "false", "off", "0", "n"))


def _to_bool(word: str) -> bool:
    low = word.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Bad(f"{word!r} is not yes or no")


def _to_int(word: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise _Bad(f"{word!r} is not a whole number") from None


def _to_float(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise _Bad(f"{word!r} is not a number") from None


def _to_duration(word: str) -> timedelta:
    try:
        return parse_duration(word)
    except ValueError:
        raise _Bad(f"{word!r} is not a duration (like 90s, 10m, 2h, 1d)") from None


def _choices(values: Sequence[Any], labels: Sequence[str]) -> Callable[[str], Any]:
    by_label = {label.lower(): value for label, value in zip(labels, values, strict=True)}
    shown = ", ".join(labels)

    def convert(word: str) -> Any:
        try:
            return by_label[word.lower()]
        except KeyError:
            raise _Bad(f"{word!r} is not one of {shown}") from None

    return convert


def _exact(by_word: dict[str, Any]) -> Callable[[str], Any]:
    """A quick converter: the words already in lower case, looked up as they are."""
    return {word: value for word, value in by_word.items() if word.lower() == word}.__getitem__


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one annotation converts: the converter, its metavar, its choices if any."""

    convert: Callable[[str], Any]
    metavar: str
    choices: tuple[str, ...] = ()
    is_bool: bool = False
    lookup: str = ""
    #: For the quick binder: gives what ``convert`` gives, or raises anything (the
    #: general binder then says what is wrong). A builtin where one will do
    #: (``int``, a dict's ``__getitem__``): a Python function is a frame per word.
    quick: Callable[[str], Any] | None = None


def _lookup_kind(kind: Literal["user", "channel"]) -> Callable[[str], Any]:
    mark = "@" if kind == "user" else "#"

    def convert(word: str) -> Any:
        ref = word[1:] if word.startswith(mark) and len(word) > 1 else word
        return Lookup(kind, ref, "")

    return convert


_SIMPLE: dict[Any, _Kind] = {
    str: _Kind(str, "TEXT", quick=str),
    int: _Kind(_to_int, "N", quick=int),
    float: _Kind(_to_float, "X", quick=float),
    bool: _Kind(
        _to_bool,
        "yes|no",
        is_bool=True,
        quick=_exact({**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}),
    ),
    timedelta: _Kind(_to_duration, "DURATION"),
    FullUser: _Kind(_lookup_kind("user"), "USER", lookup="user"),
    Channel: _Kind(_lookup_kind("channel"), "CHANNEL", lookup="channel"),
}
_SUPPORTED = (
    "str, int, float, bool, Literal[...], an Enum, User, Channel, Duration, "
    "list[T], T | None, Rest[str]"
)


def _kind_of(annotation: Any) -> _Kind | None:
    simple = _SIMPLE.get(annotation)
    if simple is not None:
        return simple
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        labels = [v.value if isinstance(v, enum.Enum) else str(v) for v in values]
        quick = _exact({label.lower(): v for label, v in zip(labels, values, strict=True)})
        return _Kind(_choices(values, labels), "|".join(labels), tuple(labels), quick=quick)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        members = list(annotation)
        labels = [m.name.lower() for m in members]
        by_value = {str(m.value).lower(): m for m in members}
        by_name = _choices(members, labels)

        def convert(word: str) -> Any:
            member = by_value.get(word.lower())
            return member if member is not None else by_name(word)

        quick = _exact({**dict(zip(labels, members, strict=True)), **by_value})
        return _Kind(convert, "|".join(labels), tuple(labels), quick=quick)
    return None


# -- parameters and the signature --------------------------------------------


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: _Kind
    option: bool  # keyword-only: --name VALUE
    required: bool
    default: Any
    many: bool = False  # list[T] / *args: as many words as convert
    rest: bool = False  # Rest[str]: the rest of the line
    var: bool = False  # *args: spread into the call

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def usage(self) -> str:
        if self.option:
            value = (
                ""
                if self.kind.is_bool
                else " " + ("|".join(self.kind.choices) if self.kind.choices else self.name.upper())
            )
            text = f"{self.flag}{value}"
            return text if self.required else f"[{text}]"
        text = self.name + ("..." if self.many or self.rest else "")
        return f"<{text}>" if self.required else f"[{text}]"


def _annotations(fn: Callable[..., Any], params: list[inspect.Parameter]) -> dict[str, Any]:
    """The parameters' annotations, evaluated (``from __future__ import annotations``)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    scope = dict(getattr(fn, "__globals__", {}))
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None) or ()
    if code is not None:
        for name, cell in zip(code.co_freevars, closure, strict=False):
            try:
                scope[name] = cell.cell_contents
            except ValueError:
                continue
    found: dict[str, Any] = {}
    for p in params:
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, scope)
            except Exception as exc:
                raise UsageError(
                    f"parameter {p.name!r}: cannot evaluate its annotation {p.annotation!r}: {exc}",
                    hint="import the types the annotation names at module level",
                ) from None
        found[p.name] = ann
    return found


def _unwrap(annotation: Any) -> tuple[Any, bool, bool, bool]:
    """(inner type, optional, many, rest) of one annotation."""
    optional = many = rest = False
    if annotation is inspect.Parameter.empty:
        return str, False, False, False
    for _ in range(4):
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            inner, *extra = typing.get_args(annotation)
            if _REST in extra:
                rest = True
            if _DURATION in extra:
                inner = timedelta
            annotation = inner
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != len(typing.get_args(annotation)):
                optional = True
            if len(args) != 1:
                return annotation, optional, many, rest
            annotation = args[0]
        elif origin in (list, Sequence) and not many:
            many = True
            (annotation,) = typing.get_args(annotation) or (str,)
        else:
            break
    return annotation, optional, many, rest


class _QuickBinder:
    """:meth:`CommandSignature.bind`'s quick path: the common line, with no tokens built.

    The common line has no quotes, the positional words first, one for each
    parameter, then options exactly as declared (``web 3 --env prod``).
    Anything else raises (any exception: a KeyError, an IndexError, ``_Bad``)
    and the general binder takes it, so this must never give what the
    general binder would not (tests/bot/test_bot_commands.py compares them).
    """

    __slots__ = (
        "_converters",
        "_most",
        "_option_defaults",
        "_options",
        "_positional_defaults",
        "_required",
        "_required_options",
    )

    def __init__(self, params: list[_Param]) -> None:
        positional = [p for p in params if not p.option]
        self._converters = [p.kind.quick or p.kind.convert for p in positional]
        self._most = len(positional)
        self._required = sum(1 for p in positional if p.required)
        self._positional_defaults = tuple(p.default for p in positional)
        # --name -> (parameter, converter); the converter None for a flag (--force).
        self._options = {
            p.flag: (p.name, None if p.kind.is_bool else p.kind.quick or p.kind.convert)
            for p in params
            if p.option
        }
        self._option_defaults = {p.name: p.default for p in params if p.option and not p.required}
        self._required_options = [p.name for p in params if p.option and p.required]

    def bind(self, body: str, first: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The handler's arguments for ``body`` after ``first``; raises for lines it leaves.

        ``first`` (the context) leads the positional arguments, a tuple, so
        the caller can call ``handler(*args, **kwargs)`` with none built again.

        The options start at the first ``--``: the words before it are the
        positional ones (none of them can look like an option), and from it on
        every word is an option as declared or an option's value.
        """
        if '"' in body or "'" in body:
            raise _Bad  # quoted words: the general binder's
        kwargs = self._option_defaults.copy()
        options = self._options
        head, dashes, tail = body.partition("--") if options else (body, "", "")
        if dashes:
            if head and head[-1] != " ":
                raise _Bad  # a word with -- inside it (or a tab before an option)
            rest = iter((dashes + tail).split())
            for word in rest:
                name, convert = options[word]  # KeyError: not an option as declared
                if convert is None:
                    kwargs[name] = True
                elif convert is str:
                    kwargs[name] = next(rest)  # StopIteration: no value
                else:
                    kwargs[name] = convert(next(rest))
        words = head.split()
        n = len(words)
        if n < self._required or n > self._most:
            raise _Bad
        c = self._converters
        args: tuple[Any, ...]
        # One or two words are most lines: spelt out, since map(operator.call, ...)
        # costs as much again as the conversions themselves.
        if n == 1:
            args = (first, c[0](words[0]))
        elif n == 2:
            args = (first, c[0](words[0]), c[1](words[1]))
        else:
            args = (first, *map(call, c, words))
        if n < self._most:
            args += self._positional_defaults[n:]
        for name in self._required_options:
            if name not in kwargs:
                raise _Bad
        return args, kwargs


class CommandSignature:
    """The typed parameters of a command handler after ``ctx``, ready to bind words to.

    Built when the handler is registered: an annotation it cannot convert is
    a :class:`UsageError` then, naming the parameter.
    """

    def __init__(self, params: list[_Param], usage: str) -> None:
        self.params = params
        self.positional = [p for p in params if not p.option]
        self.options = {p.flag: p for p in params if p.option}
        self.usage = usage
        self.lookups = any(p.kind.lookup for p in params)
        #: :meth:`bind`'s quick path, for the common shape (one word per
        #: parameter, nothing to look up); None for any other. A caller may
        #: call it first and fall back to :meth:`bind` on any exception.
        self.quick: Callable[[str, Any], tuple[tuple[Any, ...], dict[str, Any]]] | None = None
        if not self.lookups and not any(p.many or p.rest or p.var for p in params):
            self.quick = _QuickBinder(params).bind

    @classmethod
    def of(cls, fn: Callable[..., Any], display: str) -> CommandSignature | None:
        """The signature of ``fn`` (None when it takes only ``ctx``: ``ctx.args`` then)."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        raw = list(sig.parameters.values())[1:]
        if not raw:
            return None
        hints = _annotations(fn, raw)
        params: list[_Param] = []
        for p in raw:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                raise UsageError(f"command {display}: **{p.name} cannot be bound to chat words")
            ann = hints.get(p.name, p.annotation)
            inner, optional, many, rest = _unwrap(ann)
            kind = _kind_of(inner)
            if kind is None or (rest and inner is not str):
                raise UsageError(
                    f"command {display}: parameter {p.name!r} has an annotation that chat "
                    f"words cannot convert to: {ann!r}",
                    hint=f"use {_SUPPORTED}",
                )
            has_default = p.default is not inspect.Parameter.empty
            var = p.kind is inspect.Parameter.VAR_POSITIONAL
            option = p.kind is inspect.Parameter.KEYWORD_ONLY
            flag = option and kind.is_bool  # --flag: absent means False
            if has_default:
                default = p.default
            elif many or var:
                default = []
            else:
                default = False if flag else None
            params.append(
                _Param(
                    name=p.name,
                    kind=kind,
                    option=option,
                    required=not (has_default or optional or var or flag),
                    default=default,
                    many=many or var,
                    rest=rest,
                    var=var,
                )
            )
        for i, param in enumerate(params):
            if param.rest and any(not q.option for q in params[i + 1 :]):
                raise UsageError(f"command {display}: Rest[str] must be the last positional one")
        usage = " ".join([display, *(p.usage() for p in params)])
        return cls(params, usage)

    def bind(self, body: str, words: list[Token] | None = None) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the handler, or an :class:`ArgumentError`.

        ``words`` are ``tokenize(body)``, made here when not given. The common
        line goes through :attr:`quick`; anything else (quotes, ``--x=1``,
        ``--no-x``, ``--``, a typo, a word too many or too few, a word that
        does not convert) through the general binder, which says what is wrong.
        """
        quick = self.quick
        if quick is not None:
            try:
                args, kwargs = quick(body, None)
                return list(args[1:]), kwargs
            except Exception:  # whatever it is, the general binder says what is wrong
                pass
        return self._bind(body, tokenize(body) if words is None else words)

    def _bind(self, body: str, words: list[Token]) -> tuple[list[Any], dict[str, Any]]:
        values: dict[str, Any] = {}
        positional = self.positional
        options = self.options
        index = 0  # the positional parameter being filled
        end_of_options = not options
        i = 0
        n = len(words)
        while i < n:
            tok = words[i]
            i += 1
            text = tok[0]
            if not end_of_options and not tok[2] and text.startswith("--"):
                if text == "--":
                    end_of_options = True
                    continue
                i = self._option(text, words, i, values)
                continue
            while True:
                if index >= len(positional):
                    raise ArgumentError(f"unexpected argument {text!r}")
                p = positional[index]
                if p.rest:
                    values[p.name] = body[tok[1] :]
                    return self._finish(values)
                if p.many:
                    try:
                        values.setdefault(p.name, []).append(self._convert(p, text))
                        break
                    except ArgumentError:
                        if not values.get(p.name) and p.required:
                            raise
                        index += 1
                        continue
                values[p.name] = self._convert(p, text)
                index += 1
                break
        return self._finish(values)

    def _option(self, text: str, words: list[Token], i: int, values: dict[str, Any]) -> int:
        p = self.options.get(text)
        if p is not None:  # the common case: --name exactly as declared
            name, eq, value, flag = text, "", "", text
        else:
            name, eq, value = text.partition("=")
            flag = name.replace("_", "-").lower()
            p = self.options.get(flag)
        negated = False
        if p is None and flag.startswith("--no-"):
            p = self.options.get("--" + flag[5:])
            negated = p is not None and p.kind.is_bool and not eq
            if not negated:
                p = None
        if p is None:
            import difflib

            close = difflib.get_close_matches(flag, list(self.options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ArgumentError(f"{name}: unknown option{hint}")
        if p.kind.is_bool and not eq:
            values[p.name] = not negated
            return i
        if not eq:
            if i >= len(words):
                raise ArgumentError(f"{p.flag}: needs a value")
            value = words[i][0]
            i += 1
        converted = self._convert(p, value, p.flag)
        if p.many:
            values.setdefault(p.name, []).append(converted)
        else:
            values[p.name] = converted
        return i

    @staticmethod
    def _convert(p: _Param, word: str, label: str | None = None) -> Any:
        try:
            value = p.kind.convert(word)
        except _Bad as exc:
            raise ArgumentError(f"{label or p.name}: {exc}") from None
        if value.__class__ is Lookup:
            return Lookup(value.kind, value.ref, label or p.name)
        return value

    def _finish(self, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self.params:
            if p.name in values:
                value = values[p.name]
            elif p.required:
                raise ArgumentError(f"{p.flag if p.option else p.name}: missing")
            else:
                value = list(p.default) if p.many and isinstance(p.default, list) else p.default
            if p.option:
                kwargs[p.name] = value
            elif p.var:
                args.extend(value)
            else:
                args.append(value)
        return args, kwargs
