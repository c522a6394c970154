"""Where the client's settings come from: argument, environment, profile file.

Each setting resolves in this order (DESIGN.md): an explicit argument (the
CLI's flag), then the ``CONCORD_*`` environment variable, then the named
profile in a TOML config file. The file lives under the platform's user
config dir (``platformdirs``) unless ``CONCORD_CONFIG`` names another path.

The file looks like this; it is created with mode 0600 and always rewritten
atomically (a temporary file in the same directory, then ``os.replace``), so
a crash never leaves half a file and no other user can read a token::

    default_profile = "work"

    [profiles.work]
    server = "https://chat.example.com"
    username = "deploy-bot"
    token = "eyJ..."

``concordctl login`` stores the token it obtained, not the password, unless
asked to with ``--save-password`` (``save_profile(..., password=...)``): then
the profile also has a ``password``, so that a command finding the token
expired or gone logs in again by itself. It is used only with the server and
user name of the same profile, never sent to a server or as a user given
elsewhere. Reading a file that others can read logs a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from concordctl.errors import UsageError, redact_url

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_TIMEOUT",
    "ENV_CA_CERT",
    "ENV_CONFIG",
    "ENV_PASSWORD",
    "ENV_PROFILE",
    "ENV_SERVER",
    "ENV_TIMEOUT",
    "ENV_TOKEN",
    "ENV_USERNAME",
    "Settings",
    "default_config_path",
    "delete_profile",
    "load_config",
    "load_profile",
    "normalize_server",
    "resolve_settings",
    "save_profile",
    "ssl_context",
    "ws_url_for",
]

log = logging.getLogger("concordctl.config")

ENV_SERVER = "CONCORD_SERVER"
ENV_TOKEN = "CONCORD_TOKEN"
ENV_USERNAME = "CONCORD_USERNAME"
ENV_PASSWORD = "CONCORD_PASSWORD"
ENV_PROFILE = "CONCORD_PROFILE"
ENV_CONFIG = "CONCORD_CONFIG"
ENV_CA_CERT = "CONCORD_CA_CERT"
ENV_TIMEOUT = "CONCORD_TIMEOUT"
#: Seconds a request may take, all of it (connect to last byte), unless set.
DEFAULT_TIMEOUT = 10.0
DEFAULT_PROFILE = "default"

# Precedence levels of where a value came from; lower wins.
_ARG, _ENV, _FILE, _NONE = 0, 1, 2, 3


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. ``repr`` never shows a secret."""

    server: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    profile: str = DEFAULT_PROFILE
    config_path: Path | None = None
    ca_cert: str | None = None
    insecure: bool = False
    timeout: float = 10.0

    def __repr__(self) -> str:
        return (
            f"Settings(server={self.server!r}, username={self.username!r}, "
            f"password={'***' if self.password else None}, "
            f"token={'***' if self.token else None}, profile={self.profile!r}, "
            f"config_path={str(self.config_path) if self.config_path else None!r}, "
            f"ca_cert={self.ca_cert!r}, insecure={self.insecure}, timeout={self.timeout})"
        )

    @property
    def base_url(self) -> str:
        """The server URL without a trailing slash (raises UsageError if unset)."""
        if not self.server:
            raise UsageError(
                "no Concord server given",
                hint="pass --server URL, set CONCORD_SERVER, or run 'concordctl login'",
            )
        return normalize_server(self.server)

    @property
    def ws_url(self) -> str:
        """The websocket endpoint (``.../client``), without the token."""
        return ws_url_for(self.base_url)

    def with_token(self, token: str | None) -> Settings:
        return replace(self, token=token)


def normalize_server(server: str) -> str:
    """``host:port`` or a URL -> ``http(s)://host:port[/prefix]`` without trailing slash."""
    text = server.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"invalid server URL {redact_url(server)!r}",
            hint="use http://HOST:PORT or https://HOST",
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_url_for(server: str) -> str:
    """The websocket URL for a server URL: http->ws, https->wss, path prefix kept."""
    parts = urlsplit(normalize_server(server))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/client", "", ""))


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$CONCORD_CONFIG``, else ``config.toml`` in the user config dir."""
    env = os.environ if env is None else env
    override = env.get(ENV_CONFIG)
    if override:
        return Path(override).expanduser()
    # Imported here: every command resolves settings, few need this lookup
    # (CI sets CONCORD_CONFIG or passes everything in the environment).
    import platformdirs

    return platformdirs.user_config_path("concordctl") / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The whole config file as a dict ({} when it does not exist)."""
    path = default_config_path() if path is None else Path(path)
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    data: dict[str, Any] = {}
    if raw.strip():
        # Imported only for a file with something in it: a CI job's empty or
        # /dev/null config (its settings in the environment) skips the parser.
        import tomllib

        try:
            data = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(
                f"config file {path} is not valid TOML: {exc}",
                hint="fix or delete the file, then run 'concordctl login'",
            ) from None
    if stat.S_ISREG(mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "config file %s has mode %o: other users can read its tokens and saved "
            "passwords; run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    return data


def _profiles(data: Mapping[str, Any]) -> dict[str, Any]:
    profiles = data.get("profiles", {})
    return dict(profiles) if isinstance(profiles, Mapping) else {}


def load_profile(name: str | None = None, path: Path | None = None) -> dict[str, Any]:
    """One profile's table ({} when absent). ``name`` None: the file's default."""
    data = load_config(path)
    if name is None:
        name = str(data.get("default_profile") or DEFAULT_PROFILE)
    profile = _profiles(data).get(name, {})
    return dict(profile) if isinstance(profile, Mapping) else {}


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    # Only login and logout write: reading commands do not import these.
    import tempfile

    import tomli_w

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    encoded = tomli_w.dumps(dict(data)).encode()
    # mkstemp creates the file with mode 0600, so the secret is never readable
    # by others, not even for the instant before a chmod.
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_profile(
    name: str | None = None,
    *,
    path: Path | None = None,
    make_default: bool = False,
    **values: Any,
) -> Path:
    """Merge ``values`` into profile ``name`` (a None value removes the key).

    A ``password`` is stored only because the caller passed one (``login
    --save-password``); like everything here it lands in a file created 0600.
    Returns the path written.
    """
    path = default_config_path() if path is None else Path(path)
    data = load_config(path)
    name = name or str(data.get("default_profile") or DEFAULT_PROFILE)
    profiles = _profiles(data)
    profile = dict(profiles.get(name) or {})
    for key, value in values.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    profiles[name] = profile
    data["profiles"] = profiles
    if make_default or "default_profile" not in data:
        data["default_profile"] = name
    _write_atomically(path, data)
    return path


def delete_profile(name: str | None = None, path: Path | None = None) -> bool:
    """Remove a profile (logout). Returns whether it existed."""
    path = default_config_path() if path is None else Path(path)
    data = load_config(path)
    name = name or str(data.get("default_profile") or DEFAULT_PROFILE)
    profiles = _profiles(data)
    if name not in profiles:
        return False
    del profiles[name]
    data["profiles"] = profiles
    if data.get("default_profile") == name:
        data.pop("default_profile")
    _write_atomically(path, data)
    return True


def _same_server(a: Any, b: Any) -> bool:
    """Whether two server settings name the same server (``h:80/`` == ``http://h:80``)."""
    try:
        return normalize_server(str(a)) == normalize_server(str(b))
    except UsageError:
        return bool(a == b)


def _pick(arg: Any, env_value: str | None, file_value: Any) -> tuple[Any, int]:
    if arg is not None:
        return arg, _ARG
    if env_value:
        return env_value, _ENV
    if file_value is not None and file_value != "":
        return file_value, _FILE
    return None, _NONE


def resolve_settings(
    server: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    profile: str | None = None,
    config_path: Path | str | None = None,
    ca_cert: str | None = None,
    insecure: bool | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting: argument > ``CONCORD_*`` environment > profile.

    A token from a lower level than the server or the credentials is dropped
    when it cannot belong to them (a profile's token for another server or
    another user), so ``--server X --username Y`` never sends a stale token.
    A password saved in the profile is used only with that profile's own
    server and user name: never sent to another server or as another user.
    """
    env = os.environ if env is None else env
    path = Path(config_path).expanduser() if config_path else default_config_path(env)
    data = load_config(path)
    profile_name = profile or env.get(ENV_PROFILE) or data.get("default_profile")
    profile_name = str(profile_name or DEFAULT_PROFILE)
    prof = _profiles(data).get(profile_name, {})
    if not isinstance(prof, Mapping):
        prof = {}
    if profile is not None and profile_name not in _profiles(data) and data:
        log.debug("profile %r not found in %s", profile_name, path)

    srv, srv_lvl = _pick(server, env.get(ENV_SERVER), prof.get("server"))
    user, user_lvl = _pick(username, env.get(ENV_USERNAME), prof.get("username"))
    pw, pw_lvl = _pick(password, env.get(ENV_PASSWORD), prof.get("password"))
    tok, tok_lvl = _pick(token, env.get(ENV_TOKEN), prof.get("token"))
    ca, _ = _pick(ca_cert, env.get(ENV_CA_CERT), prof.get("ca_cert"))

    other_server = (
        srv_lvl < _FILE
        and prof.get("server") is not None
        and not _same_server(prof.get("server"), srv)
    )
    other_user = user_lvl < _FILE and prof.get("username") not in (None, user)
    # The profile's password belongs to the profile's user on the profile's
    # server: it is never sent anywhere else.
    own = bool(prof.get("username")) and bool(prof.get("server"))
    if pw_lvl == _FILE and (other_server or other_user or not own):
        pw, pw_lvl = None, _NONE
    # A profile's token is stale for explicit other settings: log in afresh.
    if tok_lvl == _FILE and (other_server or other_user or pw_lvl < _FILE):
        tok, tok_lvl = None, _NONE

    if insecure is None:
        insecure = bool(prof.get("insecure", False))
    return Settings(
        server=normalize_server(str(srv)) if srv else None,
        username=str(user) if user else None,
        password=str(pw) if pw else None,
        token=str(tok) if tok else None,
        profile=profile_name,
        config_path=path,
        ca_cert=str(ca) if ca else None,
        insecure=bool(insecure),
        timeout=_timeout(timeout, env.get(ENV_TIMEOUT)),
    )


def _timeout(argument: float | None, env_value: str | None) -> float:
    """The request deadline: the argument, else ``CONCORD_TIMEOUT``, else 10 s."""
    if argument is not None:
        value, source = float(argument), "the timeout"
    elif env_value:
        source = ENV_TIMEOUT
        try:
            value = float(env_value)
        except ValueError:
            raise UsageError(
                f"{ENV_TIMEOUT}={env_value!r} is not a number of seconds", hint="e.g. 30"
            ) from None
    else:
        return DEFAULT_TIMEOUT
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{source} must be a positive number of seconds", hint="e.g. 30")
    return value


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for an https/wss server (None for plain http).

    Verified by default against the system store (which honours
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``) and certifi's bundle; ``ca_cert``
    trusts a private CA instead. ``insecure`` turns verification off, loudly.
    """
    if not settings.base_url.startswith("https://"):
        return None
    if settings.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning(
            "TLS certificate verification is OFF for %s (insecure): anyone on the network "
            "path can impersonate the server and read your token; use --ca-cert instead",
            settings.base_url,
        )
        return ctx
    cafile = settings.ca_cert or os.environ.get("SSL_CERT_FILE") or None
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot load CA certificate {cafile}: {exc}",
            hint="pass a PEM file with --ca-cert or fix SSL_CERT_FILE",
        ) from None
    if cafile is None:
        with contextlib.suppress(ImportError, OSError, ssl.SSLError):
            import certifi

            ctx.load_verify_locations(cafile=certifi.where())
    return ctx
