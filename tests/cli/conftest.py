"""Running the command line for real: in-process through ``run`` (the same
error handling as the console script) or as a ``python -m concordctl``
subprocess, against the embedded server of ``tests/conftest.py``.

Every run asserts that no secret (token or password) of the test's accounts
shows up on stdout or stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from concordctl.cli import app as cli_app
from concordctl.server import ServerThread
from tests.helpers.timing import UNIT, wait_until


@dataclass
class Result:
    code: int
    out: str
    err: str

    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass
class Account:
    url: str
    name: str
    password: str
    token: str
    id: int

    @property
    def env(self) -> dict[str, str]:
        return {"CONCORD_SERVER": self.url, "CONCORD_TOKEN": self.token}

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )


@dataclass
class Secrets:
    values: list[str] = field(default_factory=list)

    def check(self, *texts: str) -> None:
        for secret in self.values:
            for text in texts:
                assert secret not in text, "a secret leaked into the output"


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no CONCORD_* settings, a private config file."""
    for name in list(os.environ):
        if name.startswith("CONCORD_") or name in ("NO_COLOR", "FORCE_COLOR"):
            monkeypatch.delenv(name)
    config = tmp_path / "config" / "concordctl.toml"
    monkeypatch.setenv("CONCORD_CONFIG", str(config))
    return config


@pytest.fixture
def cli(secrets: Secrets) -> Callable[..., Result]:
    """``cli("send", "general", "hi", env={...}, input="...")``: exit code and output."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        with runner.isolation(input=input, env=env) as (out, err, _):
            try:
                code = cli_app.run(list(args))
            except SystemExit as exc:  # pragma: no cover - run() returns codes
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
            result = Result(code, out.getvalue().decode(), err.getvalue().decode())
        secrets.check(result.out, result.err)
        return result

    return invoke


def _token(url: str, name: str, password: str) -> str:
    response = httpx.post(f"{url}/api/tokens", json={"username": name, "password": password})
    response.raise_for_status()
    return str(response.json()["token"])


@pytest.fixture
def make_account(
    server_thread: ServerThread,
    make_user_sync: Callable[..., tuple[str, str]],
    secrets: Secrets,
) -> Callable[..., Account]:
    def make(username: str | None = None) -> Account:
        name, password = make_user_sync(username)
        token = _token(server_thread.url, name, password)
        me = httpx.get(
            f"{server_thread.url}/api/self", headers={"Authorization": f"Bearer {token}"}
        ).json()
        secrets.values += [token, password]
        return Account(server_thread.url, name, password, token, int(me["id"]))

    return make


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account()


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account()


@pytest.fixture
def general(alice: Account) -> int:
    """The id of the seeded channel ``general``."""
    with alice.http() as http:
        return int(
            next(c["id"] for c in http.get("/api/channels").json() if c["name"] == "general")
        )


def send(account: Account, channel_id: int, content: str, **extra: object) -> dict[str, object]:
    with account.http() as http:
        response = http.post(
            f"/api/channels/{channel_id}/chats", json={"content": content, **extra}
        )
        response.raise_for_status()
        return dict(response.json())


# --------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------


class Proc:
    """A running ``python -m concordctl ...`` with line-wise stdout reading."""

    def __init__(self, args: Sequence[str], env: dict[str, str], secrets: Secrets) -> None:
        self.secrets = secrets
        full_env = {**os.environ, **env}
        # stderr to a file: a pipe nobody reads while the process runs fills up
        # (think --debug) and blocks it.
        import tempfile

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        self._buf = b""
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "concordctl", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=full_env,
        )

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def readline(self, timeout: float = 10.0) -> str:
        """The next stdout line (the test fails if none comes in time).

        Reads the pipe's file descriptor itself: select() on a buffered file
        object misses lines already sitting in its buffer.
        """
        import selectors

        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no output line within {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed; stderr: {self.stderr()[-2000:]}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        self.secrets.check(text)
        return text

    def finish(self, timeout: float = 20.0) -> Result:
        try:
            rest, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise AssertionError(
                f"process still running after {timeout}s: {self.stderr()[-2000:]}"
            ) from None
        out = self._buf + rest
        result = Result(self.popen.returncode, out.decode(), self.stderr())
        self.secrets.check(result.out, result.err)
        return result

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.communicate()


@pytest.fixture
def spawn(secrets: Secrets, cli_env: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*args: str, env: dict[str, str]) -> Proc:
        proc = Proc(args, {"CONCORD_CONFIG": str(cli_env), **env}, secrets)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


def wait_online(account: Account, user_id: int, timeout: float = 10 * UNIT) -> None:
    """Until ``user_id`` is ONLINE: its websocket is connected and subscribed."""
    with account.http() as http:

        def online() -> bool:
            status = http.get(f"/api/users/{user_id}").json()["status"]["onlineStatus"]
            return bool(status == "ONLINE")

        wait_until(online, timeout, f"user {user_id} to come online")


@pytest.fixture
def admin(server_thread: ServerThread, admin_password: str, secrets: Secrets) -> Account:
    """The seeded ``admin`` user (who may create, edit and delete channels)."""
    token = _token(server_thread.url, "admin", admin_password)
    me = httpx.get(
        f"{server_thread.url}/api/self", headers={"Authorization": f"Bearer {token}"}
    ).json()
    secrets.values += [token, admin_password]
    return Account(server_thread.url, "admin", admin_password, token, int(me["id"]))


@pytest.fixture(autouse=True)
def cli_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user cache dir (completion caches names there)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache
