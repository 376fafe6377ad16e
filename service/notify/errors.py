"""How a channel says a delivery failed, and whether trying again can help."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A notification was not delivered.

    ``permanent``: retrying will not help (an endpoint answering 404 or 410, an address the
    mail server refuses with 5xx), so the dispatcher gives up at once instead of backing off.
    ``reason`` is for operators: it names a status or an exception class, never a response
    body or a message's content.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"DeliveryFailed({self.reason!r}, permanent={self.permanent})"
