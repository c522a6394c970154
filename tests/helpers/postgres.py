"""A fresh PostgreSQL database per test, dropped afterwards.

The server's URL comes from ``CONCORD_TEST_POSTGRES`` (``.ci/run`` sets it, e.g.
``postgresql://postgres@127.0.0.1:5432/test``). Without it a test that needs
PostgreSQL is skipped with a reason; under ``CI`` a missing PostgreSQL is a failure.

``CREATE DATABASE`` waits 0.1-0.4 s on the server's disk, most of a PostgreSQL
test's set-up, so each test process keeps a few new, empty databases made ahead
on a thread (:class:`Spares`) and drops a test's database on that thread after
it. A test still gets a database no other test has touched, and none outlives
the session.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.helpers.timing import UNIT

ENV = "CONCORD_TEST_POSTGRES"
PREFIX = "concord_test_"


def admin_url() -> str:
    """The maintenance database's URL, or skip (fail under CI) when there is none."""
    url = os.environ.get(ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{ENV} is not set, and CI must run the PostgreSQL tests")
        pytest.skip(f"PostgreSQL tests need {ENV}=postgresql://... (see .ci/run)")
    return url


def database_url(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class Spares:
    """New, empty databases made ahead, and used ones dropped, on one thread.

    :meth:`take` returns a database no one has used (waiting while none is
    ready); :meth:`give_back` queues a used one for ``DROP``; :meth:`close`
    drops every database this object made, used or not. What making a
    database raised (PostgreSQL is down, say) is raised by every later
    :meth:`take`.
    """

    def __init__(self, admin: str, ahead: int = 4) -> None:
        self.admin = admin
        self._ahead = ahead
        self._ready: collections.deque[str] = collections.deque()
        self._drops: list[str] = []
        self._error: BaseException | None = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="postgres-spares", daemon=True)
        self._thread.start()

    def take(self, timeout: float) -> str:
        """The name of a new, empty database."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ready or self._error, timeout):
                raise TimeoutError(f"no new PostgreSQL database within {timeout:.0f} s")
            if self._ready:
                self._changed.notify_all()  # one fewer ready: the thread makes another
                return self._ready.popleft()
            assert self._error is not None
            raise self._error

    def give_back(self, name: str) -> None:
        """Drop ``name`` (connections and all) on the thread."""
        with self._changed:
            self._drops.append(name)
            self._changed.notify_all()

    def close(self) -> None:
        """Drop what is queued and what is ready, then stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _next(self) -> tuple[list[str], str]:
        """Wait for work: the databases to drop, then ``"make"`` one, ``"wait"``
        or ``"stop"`` (on :meth:`close`, with every database left among the drops)."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._drops or self._closing or len(self._ready) < self._ahead
            )
            drops, self._drops = self._drops, []
            if self._closing:
                drops += self._ready
                self._ready.clear()
                return drops, "stop"
            return drops, "make" if len(self._ready) < self._ahead else "wait"

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                then = "wait"
                while then != "stop":
                    drops, then = self._next()
                    for name in drops:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    if then == "make":
                        name = PREFIX + secrets.token_hex(6)
                        conn.execute(f'CREATE DATABASE "{name}"')
                        with self._changed:
                            self._ready.append(name)
                            self._changed.notify_all()
        except Exception as exc:  # handed to the tests waiting in take()
            with self._changed:
                self._error = exc
                self._changed.notify_all()


@pytest.fixture(scope="session")
def postgres_spares() -> Iterator[Spares]:
    """This test process's :class:`Spares`, closed (every database dropped) at the end."""
    spares = Spares(admin_url())
    try:
        yield spares
    finally:
        spares.close()


@pytest.fixture
def postgres_url(postgres_spares: Spares) -> Iterator[str]:
    """The URL of a new, empty database, dropped (connections and all) after the test."""
    import psycopg

    try:
        name = postgres_spares.take(timeout=30 * UNIT)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at {ENV} is not reachable: {exc}")
    try:
        yield database_url(postgres_spares.admin, name)
    finally:
        postgres_spares.give_back(name)
