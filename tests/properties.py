"""What the property tests (hypothesis) share: reproducible settings and their figures.

Every property runs a fixed, derandomised sequence of examples, so that CI runs the same
cases each time and a failure reproduces; no example database is kept between runs.
Each example that passed its checks counts in the ``property.examples`` figure.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.reliability import figures

PROPERTY = settings(deadline=None, derandomize=True, database=None, print_blob=False)
# For async tests that take a function-scoped fixture (``client``): the examples share one
# fresh store, which is what a search property over read-only seeded data wants.
SHARED_FIXTURE = settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                           HealthCheck.too_slow])


def passed(area: str) -> None:
    """Count one example once its checks passed: in ``property.examples``, in its family
    (``property.<area>``), and as no disagreement with the reference (asserted before)."""
    figures.add("property.examples")
    figures.add(f"property.{area}")
    figures.add("property.disagreements", 0)
