"""Building blocks of ``bench/run_core.py``, one idea per module.

Shared here: the paths every module writes to or reads from, the error that
stops a run, and the (workers, pool size) configuration being measured, so the
modules depend on this package root and not on each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
WRK_DIR = BENCH / "wrk"
RESULTS = BENCH / "RESULTS.md"
# The benchmark's Patients carry a local hospital patient number (IPP) under this system,
# not an INS: a Patient with an identifier under an INS system (urn:oid:1.2.250.1.213.1.4.8
# to .11) must be a qualified FR Core INS patient known to the INSi directory (else 422),
# which 100,000 made-up Patients are not. An IPP has no such rule; the token search on it
# costs the same.
IPP_SYSTEM = "urn:oid:1.2.250.1.999.1.1.1"


class BenchError(RuntimeError):
    """A failure that stops the run (the message says what to do)."""



@dataclass(frozen=True)
class Config:
    workers: int
    pool_size: int | None  # None: the server's default (CARNET_DB_POOL_SIZE unset)

    def label(self) -> str:
        pool = self.pool_size if self.pool_size is not None else "default (20)"
        return f"{self.workers} worker(s), pool size {pool}"

