"""Every example in examples/ runs against the embedded server, so none of them rots."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from botkit import cli_env

from concordctl.cli.run import load_bot
from concordctl.testing import Harness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONCORDCTL = str(Path(sys.executable).parent / "concordctl")


async def test_echo_bot(concord_harness: Harness) -> None:
    bot, _ = load_bot(str(EXAMPLES / "echo_bot.py"))
    await concord_harness.start_bot(bot)
    assert (await concord_harness.ask("!ping")).content == "pong"
    assert (await concord_harness.ask('!say hello "big world"')).content == "hello big world"
    help_text = (await concord_harness.ask("!help")).content
    assert "!ping — Answer pong" in help_text and "!echo (also !say)" in help_text


async def test_poll_bot_counts_reactions(concord_harness: Harness) -> None:
    h = concord_harness
    bot, _ = load_bot(str(EXAMPLES / "poll_bot.py"))
    await h.start_bot(bot)
    poll = await h.ask('!poll "Lunch?" pizza sushi')
    assert poll.content.splitlines() == ["📊 Lunch?", "1️⃣ pizza", "2️⃣ sushi"]
    await h.expect_reaction(poll, "2️⃣")  # the bot pre-reacts every option
    await h.react(poll, "2️⃣", as_user="alice")
    await h.react(poll, "2️⃣", as_user="bob")
    await h.react(poll, "1️⃣", as_user="carol")
    await h.expect_event(
        "chat_reactions_updated",
        lambda ev: ev.chat_id == poll.id and ev.reactions.get("2️⃣") == 3,
    )
    results = await h.ask("!results", as_user="carol")
    assert results.content == "📊 Lunch? — pizza: 1, sushi: 2"


async def test_periodic_bot(concord_harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = concord_harness
    monkeypatch.setenv("REMINDER_INTERVAL", "0.1")
    monkeypatch.setenv("REMINDER_TEXT", "stand up!")
    bot, _ = load_bot(str(EXAMPLES / "periodic_bot.py"))
    await h.start_bot(bot)
    hello = await h.expect_reply(match="reminder bot up: every 0.1 s")
    first = await h.expect_reply(hello, match="^stand up!$")
    await h.expect_reply(first, match="^stand up!$")  # and again
    # the reminder keeps posting, so the answer is the bot's next chat that matches
    assert (await h.ask("!uptime", match="^up ")).content.startswith("up ")
    await h.stop_bot(bot)
    await h.expect_reply(match="going offline")


async def _sh(script: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "sh",
        str(EXAMPLES / script),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _ci_env(h: Harness, tmp_path: Path, **extra: str) -> dict[str, str]:
    password = await h.register("ci")
    return cli_env(
        tmp_path,
        CONCORD_SERVER=h.url,
        CONCORD_USERNAME="ci",
        CONCORD_PASSWORD=password,
        CONCORDCTL=CONCORDCTL,
        PATH=os.environ.get("PATH", ""),
        **extra,
    )


async def test_ci_notify_posts_then_edits_the_same_chat(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    env = await _ci_env(h, tmp_path, GITHUB_RUN_ID="4242")
    code, _, err = await _sh("ci-notify.sh", "general", "build 7", "building", env=env)
    assert code == 0, err
    posted = await h.expect_reply(author="ci", match="⏳ build 7: building")
    code, _, err = await _sh("ci-notify.sh", "general", "build 7", "success", env=env)
    assert code == 0, err
    edited = await h.expect_event("chat_edited", lambda ev: ev.chat_id == posted.id)
    assert "✅ build 7: success" in edited.content  # type: ignore[union-attr]
    chats = await (await h.user("alice")).latest_chats("general", limit=5)
    assert sum("build 7" in c.content for c in chats) == 1  # edited, not posted twice

    code, _, err = await _sh("ci-notify.sh", "no-such-channel", "x", "success", env=env)
    assert code == 4 and "no-such-channel" in err


async def test_approve_gate(concord_harness: Harness, tmp_path: Path) -> None:
    h = concord_harness
    env = await _ci_env(h, tmp_path, APPROVERS="alice")

    async def gate_answered_with(answer: str, as_user: str) -> tuple[int, str]:
        before = await h.send("next round", as_user="bob")
        gate = asyncio.create_task(_sh("approve-gate.sh", "general", "deploy v1?", "30", env=env))
        await h.expect_reply(before, author="ci", match="deploy v1\\?", timeout=15)
        if as_user != "alice":  # not an approver: ignored, then alice decides
            await h.send(answer, as_user=as_user)
        await h.send(answer if as_user == "alice" else "deny", as_user="alice")
        code, out, _ = await gate
        return code, out

    code, out = await gate_answered_with("approve, ship it", "alice")
    assert code == 0 and "approve, ship it" in out
    code, out = await gate_answered_with("approve", "mallory")  # mallory's approve ignored
    assert code == 1 and "deny" in out

    code, _, err = await _sh("approve-gate.sh", "general", "anyone?", "1", env=env)
    assert code == 124 and "no answer" in err


def test_github_actions_step_uses_the_scripts() -> None:
    workflow = (EXAMPLES / "github-actions.yml").read_text()
    for script in ("examples/ci-notify.sh", "examples/approve-gate.sh"):
        assert script in workflow
        assert os.access(EXAMPLES / Path(script).name, os.X_OK)
    assert "CONCORD_SERVER: ${{ secrets.CONCORD_SERVER }}" in workflow
    assert "CONCORD_TOKEN: ${{ secrets.CONCORD_TOKEN }}" in workflow
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return
    steps = yaml.safe_load(workflow)["jobs"]["deploy"]["steps"]
    assert any("approve-gate.sh" in step.get("run", "") for step in steps)
