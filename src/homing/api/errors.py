"""One error shape for the whole API: ``{"code": ..., "detail": ...}``; 422 validation errors
are ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` (never echoing the input, which
may hold a secret)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from homing.errors import ConflictError, HomingError, NotFoundError

log = logging.getLogger("homing.api")

_CODES = {
    400: "bad_request",
    401: "authentication_failed",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    429: "rate_limited",
}


class ApiError(Exception):
    """An HTTP error with a machine code and a human detail."""

    def __init__(
        self,
        status: int,
        detail: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or _CODES.get(status, "error")
        self.headers = headers


class InvalidInput(Exception):
    """A validation failure found by our own code, reported in the 422 validation shape."""

    def __init__(self, loc: list[str | int], msg: str, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.kind = kind


def error_response(
    status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code or _CODES.get(status, "error"), "detail": detail}, status, headers=headers
    )


def validation_response(loc: list[Any], msg: str, kind: str = "value_error") -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, 422)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.code, exc.headers)


async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    return validation_response(list(exc.loc), exc.msg, exc.kind)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
    return error_response(exc.status_code, detail, headers=dict(exc.headers or {}))


def _details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{loc, msg, type}``, without ``input`` (it may hold a secret)."""
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _details(exc.errors())}, 422)


async def _model_error(_: Request, exc: Exception) -> JSONResponse:
    """A model built inside a handler (e.g. from a path value) failed validation: still 422."""
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": _details(exc.errors())}, 422)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return error_response(404, str(exc))
    if isinstance(exc, ConflictError):
        return error_response(409, str(exc))
    log.error("request failed: %s", exc.__class__.__name__, exc_info=exc)
    return error_response(500, "Internal error.", "internal_error")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error: %s", exc.__class__.__name__, exc_info=exc)
    return error_response(500, "Internal error.", "internal_error")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _model_error)
    app.add_exception_handler(HomingError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)
