"""Passwords, tokens and login rate limits of the embedded server.

* Passwords: scrypt (``hashlib``), parameters stored with each hash, compared
  in constant time. Hashing is slow on purpose: call it off the event loop.
* Tokens: RS256 JWTs with the contract's claims (``sub``, ``id``, ``exp``,
  ``iat``, ``iss="Concord"``), every one of them required and checked. The
  RSA key is generated on first start and kept beside the database (0600).
* Login attempts: failures are counted per username and per client address
  in a sliding window; past the limit, logins answer 429 with Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from concordctl.ids import MAX_ID

__all__ = [
    "ISSUER",
    "LoginLimiter",
    "TokenClaims",
    "TokenError",
    "TokenSigner",
    "hash_password",
    "load_or_create_key",
    "random_password",
    "verify_password",
]

ISSUER = "Concord"
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_KEY_FILE_MODE = 0o600
_VERIFIED_CACHE_SIZE = 4096


def random_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """``scrypt$n$r$p$salt$hash`` (salt and hash base64)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash to spend the same time on when the username does not exist, so
# response times do not tell which usernames exist.
DUMMY_HASH = hash_password(secrets.token_hex(8))


_memory_key: list[rsa.RSAPrivateKey] = []


def load_or_create_key(path: Path | None) -> rsa.RSAPrivateKey:
    """The signing key from ``path``, made (mode 0600) when missing; in memory if None.

    In-memory servers of one process share one key: they are throwaway test
    servers, and RSA generation would otherwise dominate their start-up.
    """
    if path is None:
        if not _memory_key:
            _memory_key.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _memory_key[0]
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def new_key_pem() -> bytes:
    """A new RSA signing key as unencrypted PKCS#8 PEM (slow: call off the loop)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the stored signing key is not an RSA private key")
    return key


class TokenError(Exception):
    """A token that is missing, malformed, forged, expired or of the wrong issuer."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    user_id: int
    issued_at: float
    expires_at: float
    #: The user's token version when issued (``ver``); None in tokens made before it existed.
    version: int | None = None


class TokenSigner:
    def __init__(self, key: rsa.RSAPrivateKey, validity_seconds: float) -> None:
        self._key = key
        self._public = key.public_key()
        self.validity_seconds = validity_seconds
        self._verified: dict[str, TokenClaims] = {}

    def issue(
        self, username: str, user_id: int, *, lifetime: float | None = None, version: int = 0
    ) -> str:
        """A token for the user; ``lifetime`` (seconds, may be negative in tests)
        overrides the configured validity. ``version`` is the user's token
        version (claim ``ver``): bumping it retires every older token."""
        now = int(time.time())
        seconds = max(1, round(self.validity_seconds)) if lifetime is None else round(lifetime)
        claims: dict[str, Any] = {
            "sub": username,
            "id": user_id,
            "iat": now,
            "exp": now + seconds,
            "iss": ISSUER,
            "ver": version,
        }
        return jwt.encode(claims, self._key, algorithm="RS256")

    def verify(self, token: str) -> TokenClaims:
        """The token's claims, or TokenError. Verified tokens are remembered
        (until they expire) so a busy client does not pay an RSA check per call."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                return cached
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                issuer=ISSUER,
                options={"require": ["sub", "id", "exp", "iat", "iss"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenError(type(exc).__name__) from None
        user_id, sub = claims.get("id"), claims.get("sub")
        # An id outside SQLite's integer range would overflow the user lookup.
        if type(user_id) is not int or not 0 < user_id <= MAX_ID or not isinstance(sub, str):
            raise TokenError("bad claims")
        version = claims.get("ver")
        if version is not None and type(version) is not int:
            raise TokenError("bad claims")
        return TokenClaims(sub, user_id, float(claims["iat"]), float(claims["exp"]), version)


class LoginLimiter:
    """Failed logins per key (a username, an address) within a sliding window."""

    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if self.max_failures <= 0:
            return 0.0
        times = self._prune(key)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window - time.monotonic())

    def failed(self, key: str) -> None:
        if self.max_failures > 0:
            self._prune(key).append(time.monotonic())

    def _prune(self, key: str) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        horizon = time.monotonic() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(self._failures) > 10_000:  # bound memory under a spray of names
            for stale in [k for k, v in self._failures.items() if not v]:
                del self._failures[stale]
        return times
