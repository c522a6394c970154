"""Turning a failure into the one line that says what is really wrong.

Most failures explain themselves. A few look alike from the client's side
and need one more look, taken only once something has failed (so a working
command never pays for it):

* no credentials for the server given: is the server there at all (exit 6),
  is it a Concord server (exit 7), or does the profile belong to another
  server (say which);
* a server URL ending in ``/api`` (the API is under it already);
* ``https://`` to a server that speaks plain http;
* a server that answers, but not as Concord does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concordctl.errors import (
    ConcordError,
    NotAuthenticated,
    NotFound,
    ProtocolViolation,
    Unreachable,
    UsageError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from concordctl.config import Settings

__all__ = ["check_profile", "check_server_url", "diagnose", "no_credentials", "no_such_profile"]

#: How long the probe of a failing server may take.
PROBE_SECONDS = 3.0


def check_server_url(settings: Settings) -> None:
    """Refuse, before any request, a server URL that cannot be right."""
    url = settings.base_url
    if url.rstrip("/").endswith("/api"):
        raise UsageError(
            f"the server URL {url} ends in /api",
            hint=f"give the server's root, e.g. {url.rstrip('/')[: -len('/api')]}",
        )


def no_such_profile(name: str, path: Path | None = None) -> NotFound:
    """The error for a profile name the config file does not have, listing those it has."""
    from concordctl.config import load_config

    profiles = load_config(path).get("profiles", {})
    names = sorted(profiles) if isinstance(profiles, dict) else []
    others = ", ".join(names) if names else "none yet (run `concordctl login`)"
    return NotFound(f"no profile named {name!r}", hint=f"the profiles are: {others}")


def check_profile(name: str | None, path: Path | None) -> None:
    """A profile asked for by name (flag or CONCORD_PROFILE) must exist."""
    from concordctl.config import load_config

    if not name:
        return
    profiles = load_config(path).get("profiles", {})
    if not isinstance(profiles, dict) or name not in profiles:
        raise no_such_profile(name, path)


def no_credentials(settings: Settings) -> NotAuthenticated:
    """The error for a command that has a server but no credentials for it."""
    from concordctl.config import load_profile, normalize_server

    stored = load_profile(settings.profile, settings.config_path)
    other = stored.get("server")
    if other and normalize_server(str(other)) != settings.base_url:
        return NotAuthenticated(
            f"not logged in to {settings.base_url}: profile {settings.profile!r} is for "
            f"{normalize_server(str(other))}",
            hint=f"use --server {normalize_server(str(other))}, or run `concordctl login "
            f"--server {settings.base_url}` (with --profile NAME to keep both)",
        )
    return NotAuthenticated(
        f"not logged in to {settings.base_url}",
        hint=f"run `concordctl login --server {settings.base_url}` or set CONCORD_TOKEN",
    )


def _probe(settings: Settings) -> ConcordError | None:
    """What is wrong with the server itself, if anything: one unauthenticated GET."""
    import httpx

    from concordctl.config import ssl_context

    url = settings.base_url + "/api/server"
    try:
        tls = ssl_context(settings)
        with httpx.Client(verify=tls if tls is not None else False, timeout=PROBE_SECONDS) as http:
            response = http.get(url)
    except httpx.ConnectError as exc:
        text = str(exc)
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            plain = "http://" + settings.base_url.removeprefix("https://")
            return Unreachable(
                f"{settings.base_url} does not speak TLS",
                hint=f"use {plain} (http://, not https://)",
            )
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return Unreachable(
                f"the TLS certificate of {settings.base_url} is not trusted",
                hint="pass --ca-cert PEM for a private CA (login saves it in the profile)",
            )
        return Unreachable(
            f"cannot connect to {settings.base_url}",
            hint="is the server running? check --server or CONCORD_SERVER",
        )
    except httpx.TimeoutException:
        return Unreachable(f"{settings.base_url} did not answer within {PROBE_SECONDS:g}s")
    except (httpx.HTTPError, OSError):
        return None
    concord = response.status_code == 401 and "www-authenticate" in response.headers
    if response.status_code == 200:
        try:
            concord = isinstance(response.json(), dict) and "name" in response.json()
        except ValueError:
            concord = False
    if not concord:
        kind = response.headers.get("content-type", "?").split(";")[0]
        return ProtocolViolation(
            f"{settings.base_url} does not look like a Concord server "
            f"(GET /api/server answered {response.status_code} {kind})",
            hint="check --server or CONCORD_SERVER",
        )
    return None


def diagnose(settings: Settings, exc: ConcordError) -> ConcordError:
    """``exc``, or the error that says better what went wrong."""
    if isinstance(exc, NotAuthenticated) and not settings.token and not settings.password:
        return _probe(settings) or no_credentials(settings)
    if isinstance(exc, Unreachable) and "TLS" in exc.message:
        return _probe(settings) or exc
    if isinstance(exc, (NotFound, ProtocolViolation)) and not getattr(exc, "suggestions", None):
        probed = _probe(settings)
        if probed is not None:
            return probed
    return exc
