"""What every benchmark script's ``main`` does around its run: clean up, report, publish."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from core import RESULTS, ROOT, WORK, BenchError
from core.database import drop_database
from core.report import write_results
from core.wrk import check_wrk

T = TypeVar("T")


def add_common_options(p: argparse.ArgumentParser, db_name: str) -> None:
    """The options every benchmark script takes: server, wrk, database, output."""
    p.add_argument("--workers", type=int, default=2, help="carnet serve --workers")
    p.add_argument("--pool-size", type=int, default=None,
                   help="CARNET_DB_POOL_SIZE per worker (default: the server's default)")
    p.add_argument("--duration", type=int, default=15, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each run")
    p.add_argument("--connections", type=int, default=16, help="wrk concurrent connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--db-name", default=db_name, help="database created and dropped")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--profile", action="store_true",
                   help="record py-spy profiles of the server during each measured run into "
                        "bench/.work/ (needs py-spy; figures are then not written to RESULTS.md)")
    p.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    p.add_argument("--note", default="", help="free text recorded with the run")
    p.add_argument("--keep-database", action="store_true",
                   help="leave the loaded database in place at the end (to profile or query "
                        "it afterwards; drop it by hand, or the next run replaces it)")


def check_database_name(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The script drops its database at the end: only one of the benchmark's own names."""
    if not args.db_name.startswith("carnet_bench"):
        p.error("--db-name must start with carnet_bench (it is dropped at the end)")


def add_phases_option(p: argparse.ArgumentParser, phases: Sequence[str]) -> None:
    p.add_argument("--only", default=",".join(phases),
                   help=f"comma-separated subset of {','.join(phases)}")


def chosen_phases(p: argparse.ArgumentParser, only: str, phases: Sequence[str]) -> list[str]:
    """``--only`` as a list; an unknown phase stops with the parser's usage error."""
    chosen = [x.strip() for x in only.split(",") if x.strip()]
    unknown = set(chosen) - set(phases)
    if unknown:
        p.error(f"unknown --only phase(s): {', '.join(sorted(unknown))}")
    return chosen


def bench_main(args: argparse.Namespace, run: Callable[[], T],
               section: Callable[[T, str, dt.datetime], str], failed: Callable[[T], bool],
               cleanup: Callable[[], None] | None = None) -> int:
    """A script's whole ``main``: run under ``guarded_run``, publish its section, and exit
    1 when ``failed`` says requests failed."""
    started = dt.datetime.now(dt.UTC)
    outcome = guarded_run(args, lambda wrk_version: (wrk_version, run()), cleanup=cleanup)
    if isinstance(outcome, int):
        return outcome
    wrk_version, result = outcome
    publish(args, section(result, wrk_version, started))
    return 1 if failed(result) else 0


def guarded_run(args: argparse.Namespace, run: Callable[[str], T],
                cleanup: Callable[[], None] | None = None) -> T | int:
    """``run(wrk_version)``; the database is dropped whatever happens. An int is an exit
    status: 2 when the run could not be completed, 130 when interrupted (SIGTERM too)."""

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(check_wrk())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        if getattr(args, "keep_database", False):
            print(f"kept database {args.db_name}", file=sys.stderr)
        else:
            with contextlib.suppress(Exception):
                drop_database(args)
                print(f"dropped database {args.db_name}", file=sys.stderr)


def publish(args: argparse.Namespace, text: str) -> None:
    """Print the section and add it to RESULTS.md, unless profiling or told not to."""
    print("\n" + text)
    if args.profile:
        print(f"profiles (py-spy raw/collapsed stacks) are in {WORK}; "
              "RESULTS.md left alone (profiling slows the server)")
    elif not args.no_results:
        write_results(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
