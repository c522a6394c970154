"""A fresh PostgreSQL database per test, dropped afterwards.

The server's URL comes from ``CONCORD_TEST_POSTGRES`` (``.ci/run`` sets it, e.g.
``postgresql://postgres@127.0.0.1:5432/test``). Without it a test that needs
PostgreSQL is skipped with a reason; under ``CI`` a missing PostgreSQL is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = "CONCORD_TEST_POSTGRES"


def admin_url() -> str:
    """The maintenance database's URL, or skip (fail under CI) when there is none."""
    url = os.environ.get(ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{ENV} is not set, and CI must run the PostgreSQL tests")
        pytest.skip(f"PostgreSQL tests need {ENV}=postgresql://... (see .ci/run)")
    return url


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(url: str) -> tuple[str, str]:
    """Create a uniquely named database; return ``(name, url)``."""
    import psycopg

    name = "concord_test_" + secrets.token_hex(6)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at {ENV} is not reachable: {exc}")
    return name, _with_database(url, name)


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database, dropped (connections and all) after the test."""
    admin = admin_url()
    name, url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, name)
