"""The endpoint's error answers, free of Ray: every bad request gets a 4xx with a JSON body
``{"error": "...", "detail": ...}`` that names the field at fault, and a body over the limit is
refused before it is read in full."""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations at runtime
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


def error_response(status: int, error: str, detail=None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail}, headers=headers)


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the first bad field (``texts.3``), without echoing the input back."""
    errors = [{"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
              for error in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part != "body") or "body"
    return error_response(422, f"{where}: {first['msg']}", jsonable_encoder(errors))


async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    # FastAPI answers an undecodable body with a bare 400 "There was an error parsing the body"
    error = "body: cannot be decoded as UTF-8 JSON" if exc.status_code == 400 else str(exc.detail)
    return error_response(exc.status_code, error, headers=getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read in full or parsed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(413, self._message())(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body that does not say its length
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"body: larger than the limit of {self.max_bytes} bytes"
