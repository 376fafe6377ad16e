"""KeyStore: persistence, rotation and sharing of the signing keys between processes."""

from __future__ import annotations

import json
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth.keys import KEYS_FILE, KeyStore
from auth.tokens import InvalidToken, JwksCache, TokenVerifier

ISSUER = "http://127.0.0.1:8000/mock-psc"
AUDIENCE = "carnet"


class Clock:
    """A clock the test moves by hand (wall time for the store, monotonic for the cache)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "899700218896", "aud": AUDIENCE, "iat": now, "exp": now + 300,
            "jti": str(uuid.uuid4())}


def stored_kids(directory: Path) -> list[str]:
    return [entry["kid"] for entry in json.loads((directory / KEYS_FILE).read_text())]


def published_kids(store: KeyStore) -> list[str]:
    return [key["kid"] for key in store.jwks()["keys"]]


class Issuer:
    """A store, its JWKS endpoint (counting requests) and a verifier with a hand-moved clock."""

    def __init__(self, store: KeyStore, client: httpx.AsyncClient, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE,
                                      keys=JwksCache(f"{ISSUER}/jwks", client, clock=clock))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[int], KeyStore]]:
    store = KeyStore(tmp_path / "keys", clock=Clock(1_800_000_000.0))
    fetches = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        fetches[0] += 1
        return httpx.Response(200, json=store.jwks())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield http, fetches, store


def test_the_first_key_is_created_once_and_persisted(tmp_path: Path) -> None:
    first = KeyStore(tmp_path / "keys").signing_key()
    assert KeyStore(tmp_path / "keys").signing_key() == first
    assert KeyStore(tmp_path / "keys").signing_key().kid == first.kid
    assert stored_kids(tmp_path / "keys") == [first.kid]


def test_the_key_file_is_private_to_the_service_user(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "keys"
    store = KeyStore(directory)
    store.signing_key()
    store.rotate(60)
    assert stat.S_IMODE((directory / KEYS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


async def test_a_token_signed_by_the_old_key_still_verifies_after_rotation(
        client: tuple[httpx.AsyncClient, list[int], KeyStore]) -> None:
    http, fetches, store = client
    issuer = Issuer(store, http, Clock(50.0))
    old_token = store.signing_key().sign(claims())
    await issuer.verifier.verify(old_token)
    new_kid = store.rotate(keep_seconds=3600)
    issuer.clock.now += 10
    new_token = store.signing_key().sign(claims())
    assert store.signing_key().kid == new_kid
    assert (await issuer.verifier.verify(new_token))["aud"] == AUDIENCE
    assert fetches[0] == 2  # the new kid made the cache fetch the JWKS again
    assert (await issuer.verifier.verify(old_token))["aud"] == AUDIENCE
    assert fetches[0] == 2


def test_the_old_key_is_dropped_after_keep_seconds(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    store = KeyStore(tmp_path / "keys", clock=clock)
    old = store.signing_key().kid
    new = store.rotate(keep_seconds=600)
    assert published_kids(store) == [old, new]
    clock.now += 599
    assert published_kids(store) == [old, new]
    clock.now += 2
    assert published_kids(store) == [new]
    assert stored_kids(tmp_path / "keys") == [old, new]  # only dropped from disk by a change
    newest = store.rotate(keep_seconds=600)
    assert stored_kids(tmp_path / "keys") == [new, newest]


async def test_a_token_from_a_removed_key_does_not_verify(
        client: tuple[httpx.AsyncClient, list[int], KeyStore]) -> None:
    http, fetches, store = client
    issuer = Issuer(store, http, Clock(50.0))
    old = store.signing_key()
    token = old.sign(claims())
    await issuer.verifier.verify(token)
    store.rotate(keep_seconds=3600)
    store.remove(old.kid)
    assert old.kid not in published_kids(store)
    issuer.clock.now += 301  # a running verifier re-checks its keys after max_age
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await issuer.verifier.verify(token)
    fresh = Issuer(store, http, Clock(50.0))  # and a freshly started one never knew it
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await fresh.verifier.verify(token)
    assert fetches[0] == 3  # first use, max_age re-check, the fresh verifier's first use
    with pytest.raises(KeyError):
        store.remove(old.kid)


def test_removing_the_current_key_makes_a_new_one(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    compromised = store.signing_key().kid
    store.remove(compromised)
    assert store.signing_key().kid != compromised
    assert compromised not in published_kids(store)


def test_two_processes_see_each_other_s_rotation_and_lose_no_key(tmp_path: Path) -> None:
    server, cli = KeyStore(tmp_path / "keys"), KeyStore(tmp_path / "keys")
    first = server.signing_key().kid
    assert cli.signing_key().kid == first
    second = cli.rotate(keep_seconds=3600)
    assert server.signing_key().kid == second
    third = server.rotate(keep_seconds=3600)  # server's view of the file was up to date...
    fourth = cli.rotate(keep_seconds=3600)    # ...and cli's was stale: it re-reads under lock
    assert published_kids(server) == published_kids(cli) == [first, second, third, fourth]
    assert server.signing_key().kid == cli.signing_key().kid == fourth


def test_concurrent_first_key_creation_yields_one_key(tmp_path: Path) -> None:
    stores = [KeyStore(tmp_path / "keys") for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    kids: list[str] = []

    def first_key(store: KeyStore) -> None:
        barrier.wait()
        kids.append(store.signing_key().kid)

    threads = [threading.Thread(target=first_key, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kids) == 8
    assert len(set(kids)) == 1
    assert stored_kids(tmp_path / "keys") == kids[:1]


def test_concurrent_rotations_lose_no_key(tmp_path: Path) -> None:
    KeyStore(tmp_path / "keys").signing_key()
    stores = [KeyStore(tmp_path / "keys") for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    new: list[str] = []

    def rotate(store: KeyStore) -> None:
        barrier.wait()
        new.append(store.rotate(keep_seconds=3600))

    threads = [threading.Thread(target=rotate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kids = stored_kids(tmp_path / "keys")
    assert len(kids) == 5
    assert set(new) <= set(kids)
    assert KeyStore(tmp_path / "keys").signing_key().kid == kids[-1]


def test_a_corrupt_key_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyStore(directory).signing_key()
    (directory / KEYS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid signing-key file"):
        KeyStore(directory).signing_key()
    assert (directory / KEYS_FILE).read_text() == "{not json"
