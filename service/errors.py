"""One error hierarchy, one handler, always an OperationOutcome.

    FhirError (status, issue code)
    ├── BadRequest            400 invalid
    ├── Unauthorized          401 login
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not-found
    ├── MethodNotAllowed      405 not-supported
    ├── NotAcceptable         406 not-supported
    ├── Conflict              409 conflict
    ├── Gone                  410 deleted
    ├── PreconditionFailed    412 conflict
    ├── PayloadTooLarge       413 too-long
    ├── UnsupportedMediaType  415 not-supported
    ├── RangeNotSatisfiable   416 processing
    ├── Unprocessable         422 processing
    └── ServiceUnavailable    503 transient

Storage errors are mapped here too, so no other module knows HTTP statuses.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from fhir_profiles.outcome import Issue, ValidationFailed, operation_outcome
from service.ops.headers import security_headers_of
from service.ops.observe import request_id_of, route_of
from storage.errors import (
    BlobStoreUnavailable,
    BlobTooLarge,
    DatabaseBusy,
    DuplicateResource,
    InvalidSearch,
    ResourceGone,
    ResourceNotFound,
    StorageError,
    VersionConflict,
)

FHIR_JSON = "application/fhir+json"
log = logging.getLogger("carnet")


class FhirError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "exception"

    def __init__(self, diagnostics: str, *, expression: str | None = None,
                 issues: list[Issue] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.issues = issues or [Issue(diagnostics, self.code,
                                       expression=[expression] if expression else [])]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status, code = 400, "invalid"


class Unauthorized(FhirError):
    status, code = 401, "login"


class Forbidden(FhirError):
    status, code = 403, "forbidden"

    @classmethod
    def denied(cls, rule: str, reason: str, expression: str | None = None) -> Forbidden:
        """A refusal by a named rule of the access policy: ``access denied [<rule>]: ...``
        (clients and tests read the rule's name from there)."""
        return cls(f"access denied [{rule}]: {reason}", expression=expression)


class NotFound(FhirError):
    status, code = 404, "not-found"


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class NotAcceptable(FhirError):
    status, code = 406, "not-supported"


class Conflict(FhirError):
    status, code = 409, "conflict"


class Gone(FhirError):
    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, code = 412, "conflict"


class PayloadTooLarge(FhirError):
    status, code = 413, "too-long"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class RangeNotSatisfiable(FhirError):
    status, code = 416, "processing"


class Unprocessable(FhirError):
    status, code = 422, "processing"


class ServiceUnavailable(FhirError):
    status, code = 503, "transient"


def from_storage_error(exc: StorageError) -> FhirError:
    if isinstance(exc, ResourceNotFound):
        return NotFound(str(exc))
    if isinstance(exc, ResourceGone):
        return Gone(str(exc), headers={"ETag": f'W/"{exc.version_id}"'})
    if isinstance(exc, VersionConflict):
        return Conflict(str(exc))
    if isinstance(exc, DuplicateResource):
        return Conflict(str(exc))
    if isinstance(exc, InvalidSearch):
        return BadRequest(str(exc), expression=exc.param)
    if isinstance(exc, BlobTooLarge):
        return PayloadTooLarge(str(exc))
    if isinstance(exc, BlobStoreUnavailable):
        log.error("blob store unavailable: %s", exc)
        return ServiceUnavailable("the document store is unavailable; retry later",
                                  headers={"Retry-After": "5"})
    if isinstance(exc, DatabaseBusy):
        log.warning("database busy: %s", exc)
        return ServiceUnavailable("the server is overloaded and did nothing with this "
                                  "request; retry later", headers={"Retry-After": "5"})
    return FhirError(str(exc))


def outcome_response(status: int, outcome: dict[str, Any],
                     headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(outcome), status_code=status, media_type=FHIR_JSON,
                    headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render every failure as an OperationOutcome with the right status."""

    async def fhir_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FhirError)
        return outcome_response(exc.status, exc.outcome(), exc.headers)

    async def validation_failed(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationFailed)
        return outcome_response(400 if exc.kind == "structure" else 422,
                                operation_outcome(exc.issues))

    async def storage_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StorageError)
        mapped = from_storage_error(exc)
        return outcome_response(mapped.status, mapped.outcome(), mapped.headers)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome_response(exc.status_code,
                                operation_outcome([Issue(str(exc.detail), code)]),
                                dict(exc.headers or {}))

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        issues = [Issue(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}")
                  for e in exc.errors()]
        return outcome_response(400, operation_outcome(issues))

    async def client_gone(_request: Request, _exc: Exception) -> Response:
        # The client closed the connection mid-body: nobody reads this answer.
        return outcome_response(400, operation_outcome(
            [Issue("the client disconnected before sending the whole request", "incomplete")]))

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The incident is the request's id: the one the access log and the caller have.
        incident = request_id_of(request.scope) or uuid.uuid4().hex
        log.error("unexpected error on %s %s", request.method, route_of(request.scope),
                  exc_info=exc, extra={"fields": {"request_id": incident}})
        return outcome_response(500, operation_outcome(
            [Issue(f"internal error (incident {incident})", "exception", "fatal")]),
            headers=security_headers_of(request.scope))

    app.add_exception_handler(FhirError, fhir_error)
    app.add_exception_handler(ValidationFailed, validation_failed)
    app.add_exception_handler(StorageError, storage_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)
