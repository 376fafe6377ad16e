"""Where the service asks the access-policy decision point, and turns a denial into a 403."""

from __future__ import annotations

from collections.abc import Iterable

from auth.policy import Deny, Interaction, decide
from auth.principal import App, Principal
from auth.scopes import ScopeSet
from service.errors import Forbidden
from storage.search.criteria import Criterion, SearchQuery
from storage.search.parameters import SUPPORTED_TYPES, params_for

# Carnet's own work (seeding the demo data) runs as this app; no token ever maps to it.
INTERNAL = App(subject="carnet-internal", scopes=ScopeSet.parse("system/*.cruds"),
               token_id="internal", client_id="carnet-internal")


def authorize(principal: Principal, interaction: Interaction, resource_type: str) -> None:
    decision = decide(principal, interaction, resource_type)
    if isinstance(decision, Deny):
        raise Forbidden(f"access denied [{decision.rule}]: {decision.reason}")


def authorize_search(principal: Principal, query: SearchQuery) -> None:
    """A search reads its own type and every type it chains into or includes."""
    for resource_type in sorted({query.resource_type, *_reached_types(query)}):
        authorize(principal, Interaction.SEARCH, resource_type)


def _reached_types(query: SearchQuery) -> Iterable[str]:
    yield from _chained_types(query.criteria)
    for spec in query.includes:
        if spec.reverse:
            yield spec.source_type
        elif spec.target_type:
            yield spec.target_type
        else:
            targets = params_for(spec.source_type)[spec.param].targets or SUPPORTED_TYPES
            yield from (t for t in targets if t in SUPPORTED_TYPES)


def _chained_types(criteria: Iterable[Criterion]) -> Iterable[str]:
    for criterion in criteria:
        if criterion.either is not None:
            yield from _chained_types(criterion.either)
        if criterion.chain is not None:
            targets, inner = criterion.chain
            yield from targets.split(",")
            yield from _chained_types(inner)
