"""The built-in ``!help``: the commands the asking user may run, or one command's usage."""

from __future__ import annotations

from concordctl.bot.context import Context
from concordctl.bot.routes import Route

__all__ = ["HELP_DOC", "builtin_help"]

HELP_DOC = "List the commands, or explain one: help [COMMAND]."


def usage_of(route: Route, prefix: str) -> str:
    if route.signature is not None:
        return prefix + route.signature.usage
    return " | ".join(prefix + n for n in route.names)


async def builtin_help(ctx: Context) -> None:
    host = ctx._host
    table = host.table
    p = ctx.prefix
    if ctx.args:
        wanted = ctx.args[0].lower().removeprefix(p)
        route = table.command(wanted)
        if route is None or route.hidden:
            await ctx.reply(f"no command {p}{wanted}; try {p}help")
            return
        head = usage_of(route, p)
        if route.signature is not None and len(route.names) > 1:
            head += f" (also {', '.join(p + a for a in route.names[1:])})"
        await ctx.reply(f"{head}\n{route.doc or '(no description)'}")
        return
    lines = ["Commands:"]
    for route in table.visible_commands():
        if route.hidden or not await host.may_run(route, ctx):
            continue
        first = route.doc.splitlines()[0] if route.doc else ""
        names = route.names
        alias = f" (also {', '.join(p + a for a in names[1:])})" if names[1:] else ""
        lines.append(f"{p}{names[0]}{alias}" + (f" — {first}" if first else ""))
    await ctx.reply("\n".join(lines))
