"""A poll bot: counts reactions.

    !poll "Lunch?" pizza sushi salad   -> the bot posts the poll and reacts 1️⃣ 2️⃣ 3️⃣
    (people react)                     -> the bot keeps the tally from the stream
    !results                           -> the latest poll's counts in this channel

Run it:   concordctl run examples/poll_bot.py
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concordctl import Bot, ChatReactionsUpdated, Context

NUMBERS = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣"]

bot = Bot(prefix="!")


@dataclass
class Poll:
    question: str
    options: list[str]
    votes: dict[str, int] = field(default_factory=dict)  # reaction -> people (not the bot)


polls: dict[int, Poll] = {}  # poll chat id -> poll
latest: dict[int, int] = {}  # channel id -> its latest poll's chat id


@bot.command("poll")
async def poll(ctx: Context) -> None:
    """Start a poll: !poll "QUESTION" OPTION OPTION... (up to 9 options)."""
    if len(ctx.args) < 3:
        await ctx.reply('usage: !poll "question" option option...')
        return
    question, options = ctx.args[0], ctx.args[1 : 1 + len(NUMBERS)]
    lines = [f"📊 {question}"] + [f"{NUMBERS[i]} {o}" for i, o in enumerate(options)]
    posted = await ctx.reply("\n".join(lines))
    polls[posted.id] = Poll(question, options)
    latest[posted.channel_id] = posted.id
    for number in NUMBERS[: len(options)]:
        await bot.client.react(posted.id, number)  # so people only have to click


@bot.on(ChatReactionsUpdated)
async def tally(event: ChatReactionsUpdated) -> None:
    found = polls.get(event.chat_id)
    if found is None:
        return
    # The event carries the totals; the bot's own reaction is one of them.
    found.votes = {r: max(0, n - 1) for r, n in event.reactions.items() if r in NUMBERS}


@bot.command("results")
async def results(ctx: Context) -> None:
    """Show the counts of the latest poll in this channel."""
    chat_id = latest.get(ctx.chat.channel_id)
    if chat_id is None:
        await ctx.reply("no poll here yet; start one with !poll")
        return
    found = polls[chat_id]
    counts = [
        f"{option}: {found.votes.get(NUMBERS[i], 0)}" for i, option in enumerate(found.options)
    ]
    await ctx.reply(f"📊 {found.question} — " + ", ".join(counts))


if __name__ == "__main__":
    bot.run()
