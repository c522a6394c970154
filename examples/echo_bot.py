"""An echo/ping bot: the smallest useful bot.

Run it:   concordctl run examples/echo_bot.py
or:       python examples/echo_bot.py   (settings from CONCORD_* / the profile)

In any channel:  !ping  ->  pong      !echo a "b c"  ->  a b c      !help
"""

from concordctl import Bot, Context

bot = Bot(prefix="!")


@bot.command("ping")
async def ping(ctx: Context) -> None:
    """Answer pong (is the bot alive?)."""
    await ctx.reply("pong")


@bot.command("echo", aliases=["say"])
async def echo(ctx: Context) -> None:
    """Repeat the arguments: !echo a "b c"."""
    await ctx.reply(" ".join(ctx.args) or "(nothing to echo)")


if __name__ == "__main__":
    bot.run()
