"""The authenticator: verified tokens remembered briefly, refused ones never."""

from __future__ import annotations

from typing import Any

import pytest

from auth.bearer import Authenticator
from auth.principal import App
from auth.tokens import InvalidToken, TokenVerifier


class CountingVerifier:
    """Stands in for TokenVerifier: answers fixed claims, counts calls, refuses 'bad'."""

    def __init__(self, exp: float = 10_000.0) -> None:
        self.calls = 0
        self.exp = exp

    async def verify(self, token: str) -> dict[str, Any]:
        self.calls += 1
        if token.startswith("bad"):
            raise InvalidToken("bad signature")
        return {"sub": "app-1", "client_id": "app-1", "jti": token, "exp": self.exp,
                "scope": "system/Patient.rs"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def authenticator(verifier: CountingVerifier, clock: Clock, **options: Any) -> Authenticator:
    fake: TokenVerifier = verifier  # type: ignore[assignment]
    return Authenticator(fake, clock=clock, **options)


async def test_a_verified_token_is_not_verified_again_within_the_ttl() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock, ttl=60)
    first = await auth.principal("t1")
    clock.now += 59
    assert await auth.principal("t1") is first
    assert verifier.calls == 1
    assert isinstance(first, App) and first.client_id == "app-1"


async def test_a_token_is_verified_again_after_the_ttl() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock, ttl=60)
    await auth.principal("t1")
    clock.now += 61
    await auth.principal("t1")
    assert verifier.calls == 2


async def test_a_remembered_token_is_never_honoured_past_its_exp() -> None:
    verifier, clock = CountingVerifier(exp=1_010.0), Clock()
    auth = authenticator(verifier, clock, ttl=60)
    await auth.principal("t1")
    clock.now = 1_010.0
    await auth.principal("t1")
    assert verifier.calls == 2  # verified again: the verifier decides, with its leeway


async def test_refused_tokens_are_not_remembered() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            await auth.principal("bad-1")
    assert verifier.calls == 3


async def test_the_oldest_tokens_are_forgotten_beyond_the_limit() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock, max_entries=2)
    for token in ("t1", "t2", "t3"):
        await auth.principal(token)
    await auth.principal("t3")
    await auth.principal("t1")
    assert verifier.calls == 4  # t3 remembered, t1 forgotten


async def test_forget_all_makes_every_token_verified_again() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock)
    await auth.principal("t1")
    auth.forget_all()
    await auth.principal("t1")
    assert verifier.calls == 2


async def test_a_zero_ttl_remembers_nothing() -> None:
    verifier, clock = CountingVerifier(), Clock()
    auth = authenticator(verifier, clock, ttl=0)
    await auth.principal("t1")
    await auth.principal("t1")
    assert verifier.calls == 2
