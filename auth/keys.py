"""The mock identity provider's RSA signing keys, persisted in the data directory.

Every key lives in one JSON file, ``<directory>/signing-keys.json``: a list of
``{kid, created_at, published_until, private_pem}``, oldest first, the current
(signing) key last with ``published_until: null``. Several processes share it
(uvicorn workers, ``carnet keys rotate`` next to a running server), so every
change is made under an exclusive ``flock`` on ``signing-keys.lock`` after
re-reading the file, and written atomically (temporary file + ``os.replace``):
no process can lose another's key, and only one creates the first key. Readers
take no lock; they re-read the file when a cheap ``stat`` shows it changed.

A key id (``kid``) is the RFC 7638 JWK thumbprint of the public key (SHA-256,
base64url without padding, 43 characters): any party can recompute it from the
published JWK.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

KEYS_FILE = "signing-keys.json"
LOCK_FILE = "signing-keys.lock"
ALGORITHM = "RS256"
RSA_BITS = 2048


def b64url_uint(value: int) -> str:
    """Base64url without padding of a big-endian unsigned integer (JWK ``n``/``e``)."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def thumbprint(n: str, e: str) -> str:
    """RFC 7638 thumbprint of an RSA JWK: SHA-256 of its canonical members, base64url."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs tokens; its PEM is kept out of ``repr`` (and so out of logs)."""

    kid: str
    private_pem: bytes = field(repr=False)
    _jose_key: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parse the PEM once: python-jose would otherwise re-parse it for every token.
        object.__setattr__(self, "_jose_key", _jose_key(self.private_pem))

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT of ``claims`` whose header names this key (``kid``)."""
        token: str = jwt.encode(claims, self._jose_key, algorithm=ALGORITHM,
                                headers={"kid": self.kid})
        return token


@dataclass(frozen=True)
class _Entry:
    kid: str
    created_at: float
    published_until: float | None
    private_pem: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "created_at": self.created_at,
                "published_until": self.published_until,
                "private_pem": self.private_pem.decode("ascii")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Entry:
        until = data["published_until"]
        return cls(kid=str(data["kid"]), created_at=float(data["created_at"]),
                   published_until=None if until is None else float(until),
                   private_pem=str(data["private_pem"]).encode("ascii"))


@functools.lru_cache(maxsize=16)
def _jose_key(private_pem: bytes) -> Any:
    """Loading an RSA private key checks it (~30 ms): once per key and process is enough."""
    return jwk.construct(private_pem, ALGORITHM)


def _public_jwk(private_pem: bytes) -> dict[str, Any]:
    return dict(_cached_public_jwk(private_pem))


@functools.lru_cache(maxsize=16)
def _cached_public_jwk(private_pem: bytes) -> dict[str, Any]:
    private = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("signing keys must be RSA keys")
    numbers = private.public_key().public_numbers()
    n, e = b64url_uint(numbers.n), b64url_uint(numbers.e)
    return {"kty": "RSA", "n": n, "e": e, "kid": thumbprint(n, e), "use": "sig",
            "alg": ALGORITHM}


def _new_entry(now: float) -> _Entry:
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _Entry(kid=_public_jwk(pem)["kid"], created_at=float(int(now)), published_until=None,
                  private_pem=pem)


class KeyStore:
    """Signing keys of the mock identity provider, shared by every process using ``directory``."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._dir = Path(directory)
        self._path = self._dir / KEYS_FILE
        self._clock = clock
        self._mutex = threading.RLock()
        self._entries: list[_Entry] = []
        self._stamp: tuple[int, int, int] | None = None
        self._jwks_by_kid: dict[str, dict[str, Any]] = {}
        self._signers: dict[str, SigningKey] = {}
        try:
            self._dir.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        else:
            os.chmod(self._dir, 0o700)  # mkdir's mode is filtered by the umask

    def signing_key(self) -> SigningKey:
        """The newest key; the first call ever (across processes) generates it."""
        with self._mutex:
            self._refresh()
            current = self._current()
            if current is None:
                with self._exclusive():
                    current = self._current()
                    if current is None:  # still none once we hold the lock: we create it
                        current = _new_entry(self._clock())
                        self._write([*self._entries, current])
            signer = self._signers.get(current.kid)
            if signer is None:
                signer = SigningKey(kid=current.kid, private_pem=current.private_pem)
                self._signers[current.kid] = signer
            return signer

    def jwks(self) -> dict[str, Any]:
        """The JWK Set to publish: every key whose tokens may still be in use."""
        with self._mutex:
            self.signing_key()  # a verifier must never fetch an empty set before the first token
            now = self._clock()
            published = [e for e in self._entries
                         if e.published_until is None or e.published_until > now]
            return {"keys": [dict(self._public(e)) for e in published]}

    def rotate(self, keep_seconds: int) -> str:
        """Sign with a new key from now on; keep the previous one published ``keep_seconds``.

        ``keep_seconds`` must cover the longest lifetime of a token the old key signed.
        Keys whose publication time has already passed are dropped now. Returns the new kid.
        """
        if keep_seconds < 0:
            raise ValueError("keep_seconds must be >= 0")
        with self._mutex, self._exclusive():
            now = self._clock()
            until = float(math.ceil(now + keep_seconds))
            kept = [e if e.published_until is not None
                    else _Entry(e.kid, e.created_at, until, e.private_pem)
                    for e in self._entries
                    if e.published_until is None or e.published_until > now]
            new = _new_entry(now)
            self._write([*kept, new])
            return new.kid

    def remove(self, kid: str) -> None:
        """Drop a key at once (compromise); removing the current key makes the next call
        to ``signing_key`` generate a new one. Raises ``KeyError`` for an unknown kid."""
        with self._mutex, self._exclusive():
            kept = [e for e in self._entries if e.kid != kid]
            if len(kept) == len(self._entries):
                raise KeyError(kid)
            self._write(kept)

    def _current(self) -> _Entry | None:
        if self._entries and self._entries[-1].published_until is None:
            return self._entries[-1]
        return None

    def _public(self, entry: _Entry) -> dict[str, Any]:
        public = self._jwks_by_kid.get(entry.kid)
        if public is None:
            public = _public_jwk(entry.private_pem)
            if public["kid"] != entry.kid:
                raise ValueError(f"{self._path}: kid {entry.kid} does not match its key")
            self._jwks_by_kid[entry.kid] = public
        return public

    def _refresh(self) -> None:
        """Re-read the file if another process (or instance) replaced it since we last did."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._entries, self._stamp = [], None
            return
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp:
            return
        with open(self._path, "rb") as f:
            fst = os.fstat(f.fileno())
            raw = f.read()
        try:
            entries = [_Entry.from_json(item) for item in json.loads(raw)]
        except (ValueError, KeyError, TypeError) as exc:
            # Never overwrite a file we cannot read: it may hold the only copy of live keys.
            raise ValueError(f"{self._path} is not a valid signing-key file: {exc}") from exc
        self._entries = entries
        self._stamp = (fst.st_ino, fst.st_mtime_ns, fst.st_size)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the cross-process lock, with the key list freshly read from disk."""
        fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._refresh()
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, entries: list[_Entry]) -> None:
        payload = json.dumps([e.to_json() for e in entries], indent=2).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".signing-keys.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp creates the file with mode 0600
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
                st = os.fstat(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        self._entries = entries
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
