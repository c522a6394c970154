"""Typed commands without sockets: words, converters, options, usage lines, load-time errors."""

from __future__ import annotations

import asyncio
import enum
import random
from datetime import timedelta
from typing import Any, Literal

import pytest
from botkit import FakeClient, chat, from_list

from concordctl import ArgumentError, Bot, Channel, Context, Duration, Rest, User
from concordctl.bot.commands import CommandSignature, parse_duration, tokenize
from concordctl.errors import UsageError


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


async def run(bot: Bot, *contents: str) -> list[str]:
    """Feed ``contents`` as chats by alice; return what the bot sent."""
    client = FakeClient()
    async with asyncio.timeout(10):
        await bot.serve(client=client, events=from_list([chat(c) for c in contents]))  # type: ignore[arg-type]
    return [w[2] for w in client.writes if w[0] == "send"]


def deploy_bot() -> tuple[Bot, list[dict[str, Any]]]:
    bot = Bot()
    calls: list[dict[str, Any]] = []

    @bot.command("deploy")
    async def deploy(
        ctx: Context,
        service: Literal["web", "api"],
        count: int = 1,
        *,
        env: Literal["prod", "staging"] = "staging",
        force: bool = False,
    ) -> None:
        """Deploy a service."""
        calls.append({"service": service, "count": count, "env": env, "force": force})
        await ctx.reply(f"deploying {service} x{count} to {env}" + (" (forced)" if force else ""))

    return bot, calls


async def test_the_issue_example_binds_positionals_and_options() -> None:
    bot, calls = deploy_bot()
    sent = await run(
        bot, "!deploy web 3 --env prod --force", "!deploy api", "!deploy web --ENV=prod"
    )
    assert calls == [
        {"service": "web", "count": 3, "env": "prod", "force": True},
        {"service": "api", "count": 1, "env": "staging", "force": False},
        {"service": "web", "count": 1, "env": "prod", "force": False},
    ]
    assert sent[0] == "deploying web x3 to prod (forced)"


@pytest.mark.parametrize(
    ("content", "first_line"),
    [
        ("!deploy nope", "service: 'nope' is not one of web, api"),
        ("!deploy", "service: missing"),
        ("!deploy web many", "count: 'many' is not a whole number"),
        ("!deploy web --env dev", "--env: 'dev' is not one of prod, staging"),
        ("!deploy web --envv prod", "--envv: unknown option (did you mean --env?)"),
        ("!deploy web --env", "--env: needs a value"),
        ("!deploy web 2 extra", "unexpected argument 'extra'"),
    ],
)
async def test_argument_errors_answer_the_problem_then_the_usage_line(
    content: str, first_line: str
) -> None:
    bot, calls = deploy_bot()
    sent = await run(bot, content)
    assert calls == []
    assert sent == [
        f"{first_line}\nusage: !deploy <service> [count] [--env prod|staging] [--force]"
    ]


async def test_help_for_a_command_shows_the_usage_line_and_docstring() -> None:
    bot, _ = deploy_bot()
    sent = await run(bot, "!help deploy")
    assert sent == ["!deploy <service> [count] [--env prod|staging] [--force]\nDeploy a service."]


async def test_every_converter() -> None:
    bot = Bot()
    got: list[Any] = []

    @bot.command("t")
    async def t(
        ctx: Context,
        f: float,
        b: bool,
        c: Color,
        d: Duration,
        who: User,
        where: Channel,
        maybe: int | None = None,
    ) -> None:
        got.extend([f, b, c, d, who.username, where.id, maybe])

    @bot.command("many")
    async def many(ctx: Context, numbers: list[int], rest: Rest[str]) -> None:
        got.append((numbers, rest))

    @bot.command("plain")
    async def plain(ctx: Context, word, *others: str) -> None:  # type: ignore[no-untyped-def]
        got.append((word, others))

    sent = await run(
        bot,
        "!t 1.5 yes GREEN 1h30m @alice #ops",
        "!t 2 off r 90s bob general 7",
        '!many 1 2 3 it\'s   \\o/ "q"',
        "!plain a b c",
        "!t x",
        "!t 1 maybe",
        "!t 1 on blue",
        "!t 1 on red soon",
        "!t 1 on red 1m nobody general",
        "!t 1 on red 1m alice nowhere",
    )
    assert got == [
        1.5, True, Color.GREEN, timedelta(minutes=90), "alice", 3, None,
        2.0, False, Color.RED, timedelta(seconds=90), "bob", 1, 7,
        ([1, 2, 3], "it's   \\o/ \"q\""),
        ("a", ("b", "c")),
    ]  # fmt: skip
    assert [s.splitlines()[0] for s in sent] == [
        "f: 'x' is not a number",
        "b: 'maybe' is not yes or no",
        "c: 'blue' is not one of red, green",
        "d: 'soon' is not a duration (like 90s, 10m, 2h, 1d)",
        "who: no user 'nobody'",
        "where: no channel 'nowhere'",
    ]
    assert sent[0].splitlines()[1] == "usage: !t <f> <b> <c> <d> <who> <where> [maybe]"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("it's Bob's turn", ["it's", "Bob's", "turn"]),
        ("\\o/ yay", ["\\o/", "yay"]),
        ("\"a b\" 'c d'", ["a b", "c d"]),
        ('"unbalanced quote', ['"unbalanced', "quote"]),
        ("'tis Bob's", ["'tis", "Bob's"]),
        ('"say \\"hi\\"" x', ['say "hi"', "x"]),
        ("  spaced   out  ", ["spaced", "out"]),
        ("", []),
    ],
)
def test_tokenizing_is_chat_friendly(text: str, words: list[str]) -> None:
    assert [t[0] for t in tokenize(text)] == words


def test_rest_is_the_line_from_where_it_starts_verbatim() -> None:
    async def say(ctx: Context, to: str, text: Rest[str]) -> None: ...

    sig = CommandSignature.of(say, "say")
    assert sig is not None and sig.usage == "say <to> <text...>"
    body = 'bob  hello,   "world" \\o/'
    assert sig.bind(body, tokenize(body)) == (["bob", 'hello,   "world" \\o/'], {})
    with pytest.raises(ArgumentError, match="text: missing"):
        sig.bind("bob", tokenize("bob"))


def test_options_forms_dash_underscore_no_flag_and_double_dash() -> None:
    async def f(ctx: Context, *names: str, dry_run: bool = True, max_count: int = 0) -> None: ...

    sig = CommandSignature.of(f, "f")
    assert sig is not None
    assert sig.usage == "f [names...] [--dry-run] [--max-count MAX_COUNT]"

    def bind(text: str) -> tuple[list[Any], dict[str, Any]]:
        assert sig is not None
        return sig.bind(text, tokenize(text))

    assert bind("a --no-dry-run --max_count 3 b") == (
        ["a", "b"],
        {"dry_run": False, "max_count": 3},
    )
    assert bind("--max-count=4 -- --dry-run") == (["--dry-run"], {"dry_run": True, "max_count": 4})
    assert bind('"--dry-run"') == (["--dry-run"], {"dry_run": True, "max_count": 0})


def test_a_handler_that_cannot_be_bound_fails_when_the_file_loads() -> None:
    bot = Bot()
    with pytest.raises(UsageError, match=r"parameter 'x' has an annotation .* dict"):

        @bot.command("bad")
        async def bad(ctx: Context, x: dict[str, int]) -> None: ...

    with pytest.raises(UsageError, match="Rest\\[str\\] must be the last"):

        @bot.command("bad2")
        async def bad2(ctx: Context, x: Rest[str], y: int) -> None: ...

    with pytest.raises(UsageError, match="cannot be bound"):

        @bot.command("bad3")
        async def bad3(ctx: Context, **kw: str) -> None: ...


async def test_ctx_only_handlers_keep_args_and_text() -> None:
    bot = Bot()
    seen: list[tuple[list[str], str]] = []

    @bot.command("echo")
    async def echo(ctx: Context) -> None:
        seen.append((ctx.args, ctx.text))

    await run(bot, "!echo a 'b c'  d")
    assert seen == [(["a", "b c", "d"], "a 'b c'  d")]


async def test_a_handler_may_raise_argument_error_itself() -> None:
    bot = Bot()

    @bot.command("scale")
    async def scale(ctx: Context, count: int) -> None:
        if count > 10:
            raise ArgumentError("count: at most 10")
        await ctx.reply(f"scaled to {count}")

    assert await run(bot, "!scale 11", "!scale 2") == [
        "count: at most 10\nusage: !scale <count>",
        "scaled to 2",
    ]


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("", "10x", "m", "1h 2", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


async def _deploy(
    ctx: Context,
    service: Literal["web", "api"],
    count: int = 1,
    *,
    env: Literal["prod", "staging"] = "staging",
    force: bool = False,
    tag: str = "",
) -> None: ...


async def _mixed(
    ctx: Context, color: Color, ratio: float, on: bool, note: str | None = None, *, who: str
) -> None: ...


@pytest.mark.parametrize(
    "text",
    [
        "web",
        "web 3",
        "web 3 --env prod",
        "--env prod web",
        "api --force 2",
        "web --env",
        "web three",
        "nope",
        "WEB",
        "web 3 4",
        "",
        "web --envv prod",
        "web --env=prod",
        "web --no-force",
        "web -- --env",
        "web --",
        "web 3  --env   staging  ",
        "web\t--env prod",
        "web --env\tprod --force",
        "web --env PROD",
        "web --tag --force",
        "web --tag a--b",
        "web a--b",
        "web 'a b'",
        "web --env prod --env staging",
        "red 0.5 yes --who bob",
        "g 1e3 no later --who ann",
        "RED 0.5 yes --who bob",
        "red x yes --who bob",
        "red 0.5 maybe --who bob",
        "red 0.5 yes",
        "red 0.5 yes --who",
    ],
)
@pytest.mark.parametrize("handler", [_deploy, _mixed])
def test_the_quick_binder_agrees_with_the_general_one(text: str, handler: Any) -> None:
    # bind() takes unquoted, plain command lines through a quicker path
    # (sig.quick, which command plans call directly); where it answers at all
    # it must give exactly what the general binder gives, and bind() must
    # give the general binder's answer, errors included.
    sig = CommandSignature.of(handler, "cmd")
    assert sig is not None and sig.quick is not None

    def outcome(fn: Any) -> Any:
        try:
            return fn()
        except ArgumentError as exc:
            return f"error: {exc}"

    general = outcome(lambda: sig._bind(text, tokenize(text)))
    assert outcome(lambda: sig.bind(text)) == general
    try:
        args, kwargs = sig.quick(text, "ctx")
    except Exception:
        return  # not a line for it: the general binder's
    assert args[0] == "ctx"
    assert (list(args[1:]), kwargs) == general


def test_the_quick_binder_agrees_on_random_lines() -> None:
    # Lines near the common shape (so the quick binder takes many of them),
    # with odd words, spacing and order: seeded, so a failure repeats.
    rng = random.Random(9)
    sig = CommandSignature.of(_deploy, "cmd")
    assert sig is not None and sig.quick is not None
    words = ["web", "api", "WEB", "3", "-1", "x", "1_0", "--env", "--force", "--tag", "--envv"]
    words += ["prod", "PROD", "--", "a--b", "--env=prod", "--no-force", "it's", "'q'"]
    taken = 0
    for _ in range(3000):
        picked = [rng.choice(words[:3]), *rng.choices(words, k=rng.randint(0, 4))]
        text = "".join(w + rng.choice([" ", " ", "  ", "\t", "\u00a0"]) for w in picked)
        text = text.strip() if rng.random() < 0.7 else text
        try:
            general: Any = sig._bind(text, tokenize(text))
        except ArgumentError as exc:
            general = str(exc)
        try:
            args, kwargs = sig.quick(text, None)
        except Exception:
            continue
        taken += 1
        assert (list(args[1:]), kwargs) == general, text
    assert taken > 300  # the quick binder was tried on plenty


@pytest.mark.parametrize(
    "text", ["web", "web 3", "web 3 --env prod", "api 2 --force", "web 3  --env   staging  "]
)
def test_the_quick_binder_takes_the_common_lines(text: str) -> None:
    sig = CommandSignature.of(_deploy, "cmd")
    assert sig is not None and sig.quick is not None
    sig.quick(text, None)  # raises for a line it leaves to the general binder
