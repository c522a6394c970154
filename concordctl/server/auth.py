"""Passwords, tokens and login rate limits of the embedded server.

* Passwords: scrypt (``hashlib``), parameters stored with each hash, compared
  in constant time. Hashing is slow on purpose: call it off the event loop.
* Tokens: RS256 JWTs with the contract's claims (``sub``, ``id``, ``exp``,
  ``iat``, ``iss="Concord"``), every one of them required and checked. The
  RSA key is generated on first start and kept beside the database (0600).
* Login attempts: failures are counted per client address and username, and
  per address under a much higher ceiling, in a sliding window and bounded
  memory; past a limit, logins answer 429 with Retry-After.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import time
import unicodedata
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
    "MAX_USERNAME_CHARS",
    "SCRYPT_N",
    "LoginGuard",
    "LoginLimiter",
    "TokenClaims",
    "TokenError",
    "TokenSigner",
    "dummy_hash",
    "hash_password",
    "load_or_create_key",
    "random_password",
    "username_key",
    "verify_password",
]

ISSUER = "Concord"
#: scrypt's cost (N) for new hashes; each hash stores its own, so a change keeps old ones valid.
SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_KEY_FILE_MODE = 0o600
_VERIFIED_CACHE_SIZE = 4096
#: The registration limit; a longer name cannot exist, so its login is refused unexamined.
MAX_USERNAME_CHARS = 64


def random_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
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


@functools.cache
def dummy_hash(n: int = SCRYPT_N) -> str:
    """A hash of cost ``n`` to spend the same time on when the username does not
    exist, so response times do not tell which usernames exist."""
    return hash_password(secrets.token_hex(8), n=n)


_memory_key: list[rsa.RSAPrivateKey] = []


def load_or_create_key(path: Path | None) -> rsa.RSAPrivateKey:
    """The signing key from ``path``, made (mode 0600) when missing; in memory if None.

    In-memory servers of one process share one key: they are throwaway test
    servers, and RSA generation would otherwise dominate their start-up.
    """
    if path is None:
        if not _memory_key:
            _memory_key.append(new_key())
        return _memory_key[0]
    if path.exists():
        return key_from_pem(path.read_bytes(), f"{path} does not hold an RSA private key")
    key = new_key()
    pem = _pem(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def new_key() -> rsa.RSAPrivateKey:
    """A new RSA signing key (30-200 ms: call off the loop)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_key_pem() -> bytes:
    """A new RSA signing key as unencrypted PKCS#8 PEM (slow: call off the loop)."""
    return _pem(new_key())


def key_from_pem(
    pem: bytes, wrong: str = "the stored signing key is not an RSA private key"
) -> rsa.RSAPrivateKey:
    """The signing key this server stored (its key file, or its database).

    OpenSSL's check of an RSA key's numbers (50 ms, most of a start) is for
    keys from elsewhere; this one is the server's own, made by :func:`new_key`
    and readable by the server's user only.
    """
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(wrong)
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
    """Failed logins per key within a sliding window, in bounded memory.

    A key is kept as a 16-byte digest, never as the text it was made from (a
    60 KB username costs what a short one does), and at most
    ``max_failures`` timestamps are kept per key. At most ``max_keys`` keys
    are tracked: past that the key that failed least recently is forgotten
    first (its failures are the oldest, so the likeliest to have expired).
    """

    def __init__(self, max_failures: int, window_seconds: float, max_keys: int = 10_000) -> None:
        #: Failures within the window after which ``retry_after`` is positive; 0 turns it off.
        self.max_failures = max_failures
        #: Seconds a failure counts for.
        self.window = window_seconds
        #: Entries kept at most (each: a digest and up to ``max_failures`` floats).
        self.max_keys = max(1, max_keys)
        # Insertion order is failure order: ``failed`` re-inserts its key last.
        self._failures: dict[bytes, deque[float]] = {}

    @staticmethod
    def digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if self.max_failures <= 0:
            return 0.0
        times = self._failures.get(self.digest(key))
        if times is None:
            return 0.0
        self._expire(times)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window - time.monotonic())

    def failed(self, key: str) -> None:
        if self.max_failures <= 0:
            return
        digest = self.digest(key)
        times = self._failures.pop(digest, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
            while len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]
        self._expire(times)
        times.append(time.monotonic())
        self._failures[digest] = times

    def _expire(self, times: deque[float]) -> None:
        horizon = time.monotonic() - self.window
        while times and times[0] <= horizon:
            times.popleft()


def username_key(username: str) -> str:
    """The form of a username its limits are counted under (case and width folded)."""
    return unicodedata.normalize("NFKC", username).casefold()


class LoginGuard:
    """The login limits: per client address *and* username, plus a per-address ceiling.

    Failures for one username from one address lock out only that pair, so an
    attacker guessing (or spraying names) from one address cannot lock out a
    user who logs in from another; the ceiling, much higher, stops one address
    from trying many names. A locked-out login answers 429 whether or not the
    password is right, so 429 tells nothing about the password.
    """

    def __init__(self, per_user: LoginLimiter, per_address: LoginLimiter) -> None:
        self.per_user = per_user
        self.per_address = per_address

    @classmethod
    def for_limits(
        cls, per_user: int, per_address: int, window_seconds: float, max_keys: int
    ) -> LoginGuard:
        return cls(
            LoginLimiter(per_user, window_seconds, max_keys),
            LoginLimiter(per_address, window_seconds, max_keys),
        )

    @staticmethod
    def _pair(address: str, username: str) -> str:
        return f"{address}\x00{username_key(username)}"

    def retry_after(self, address: str, username: str) -> float:
        """Seconds until this address may try this username again; 0 when it may now."""
        return max(
            self.per_user.retry_after(self._pair(address, username)),
            self.per_address.retry_after(address),
        )

    def failed(self, address: str, username: str) -> None:
        self.per_user.failed(self._pair(address, username))
        self.per_address.failed(address)
