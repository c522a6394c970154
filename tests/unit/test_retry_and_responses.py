"""RetryPolicy and the status mapping: plain calls, no I/O."""

from __future__ import annotations

import pytest

from concordctl.backoff import Backoff
from concordctl.errors import (
    BadRequest,
    Forbidden,
    NotAuthenticated,
    NotFound,
    ProtocolViolation,
    RateLimited,
    ServerError,
    redact_secrets,
    redact_text,
)
from concordctl.responses import error_for_response, is_success, parse_retry_after
from concordctl.retry import RetryPolicy

NO_JITTER = Backoff(base=1.0, cap=8.0, jitter=0.0)


def test_unsent_requests_retry_whatever_the_method() -> None:
    policy = RetryPolicy(max_retries=3, backoff=NO_JITTER)
    assert [policy.delay(n, "unsent", idempotent=False) for n in range(4)] == [1, 2, 4, None]


def test_a_lost_post_is_never_repeated() -> None:
    policy = RetryPolicy(backoff=NO_JITTER)
    assert policy.delay(0, "lost", idempotent=False) is None
    assert policy.delay(0, "lost", idempotent=True) == 1


@pytest.mark.parametrize("status", [502, 503, 504, 429])
def test_retryable_statuses(status: int) -> None:
    policy = RetryPolicy(backoff=NO_JITTER)
    assert policy.delay(0, "status", idempotent=True, status=status) == 1
    assert policy.delay(0, "status", idempotent=False, status=status) is None


def test_retry_after_is_honoured_up_to_a_limit() -> None:
    policy = RetryPolicy(backoff=NO_JITTER, max_retry_after=30)
    assert policy.delay(0, "status", idempotent=True, status=429, retry_after=5) == 5
    assert policy.delay(0, "status", idempotent=True, status=429, retry_after=31) is None
    assert policy.delay(0, "status", idempotent=True, status=500) is None
    assert policy.delay(0, "status", idempotent=True, status=404) is None


def test_only_2xx_is_success() -> None:
    assert [s for s in (100, 200, 204, 299, 300, 302, 304, 400) if is_success(s)] == [200, 204, 299]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (301, ProtocolViolation),
        (304, ProtocolViolation),
        (400, BadRequest),
        (401, NotAuthenticated),
        (403, Forbidden),
        (404, NotFound),
        (405, BadRequest),
        (429, RateLimited),
        (500, ServerError),
    ],
)
def test_status_mapping(status: int, kind: type[Exception]) -> None:
    assert isinstance(error_for_response("x", status), kind)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_secrets_are_redacted_in_every_spelling() -> None:
    secret = 'p\u00e4ss "w/rd&'
    text = f"a {secret} b {secret.encode('unicode_escape').decode()} c p%C3%A4ss%20%22w%2Frd%26"
    cleaned = redact_text(text.replace("\\xe4", "\\u00e4").replace('"w', '\\"w'), [secret])
    assert "ss" not in cleaned.replace("***", ""), cleaned
    assert redact_text("abc", ["", None, "ab"]) == "abc"  # a 2-letter "secret" is a letter pair
    err = redact_secrets(NotFound("no user hunter2", hint="hunter2?"), ["hunter2"])
    assert str(err) == "no user *** (***?)" and err.args == ("no user ***",)
