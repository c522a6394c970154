"""A bot with a periodic task: a reminder posted every INTERVAL seconds.

    REMINDER_CHANNEL=general REMINDER_INTERVAL=3600 concordctl run examples/periodic_bot.py

It also answers !uptime, and says goodbye when stopped (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import os
import time

from concordctl import Bot, Context

CHANNEL = os.environ.get("REMINDER_CHANNEL", "general")
INTERVAL = float(os.environ.get("REMINDER_INTERVAL", "3600"))
TEXT = os.environ.get("REMINDER_TEXT", "⏰ stand-up in 5 minutes")

bot = Bot()
started = time.monotonic()


@bot.on_ready
async def hello() -> None:
    await bot.client.send_chat(CHANNEL, f"reminder bot up: every {INTERVAL:g} s")


@bot.every(seconds=INTERVAL)
async def remind() -> None:
    await bot.client.send_chat(CHANNEL, TEXT)


@bot.command("uptime")
async def uptime(ctx: Context) -> None:
    """How long the bot has been running."""
    await ctx.reply(f"up {time.monotonic() - started:.0f} s")


@bot.on_shutdown
async def goodbye() -> None:
    await bot.client.send_chat(CHANNEL, "reminder bot going offline")


if __name__ == "__main__":
    bot.run()
