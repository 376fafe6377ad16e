"""One turn per period for a periodic job, whoever asks."""

from __future__ import annotations

from storage.db import Database
from storage.turns import take_turn

SECOND = 1_000_000


async def test_one_turn_per_period(database: Database) -> None:
    async def ask(now: int, job: str = "sweep") -> bool:
        async with database.write() as conn:
            return await take_turn(conn, job, now, 10 * SECOND)

    assert await ask(100 * SECOND)
    assert not await ask(100 * SECOND)  # the same period: another process's turn is taken
    assert not await ask(109 * SECOND)
    assert await ask(110 * SECOND)      # the next period
    assert await ask(100 * SECOND, job="another job")  # jobs are counted apart
