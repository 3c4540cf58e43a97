"""Server interceptors shared by every gRPC service (grpc.aio).

`default_interceptors()` gives them in the order they must run, outermost first:

1. `RequestIdInterceptor` — takes `x-request-id` from the call metadata or makes one, keeps it
   in a contextvar for the logs, and echoes it in the trailing metadata.
2. `MetricsInterceptor` — Prometheus counters and a latency histogram per method and code.
3. `ErrorMappingInterceptor` — the one place that turns `ServiceError`s into status codes;
   anything unexpected becomes INTERNAL without internals, logged with the request id.
4. `AuthInterceptor` (optional) — runs an authentication hook for selected methods and keeps
   the resulting `Principal` in a contextvar (`current_principal()`).

Each interceptor wraps the behaviour of the method handler, so it sees the servicer
context (peer, auth context, metadata) and the outcome of the call, for all four call shapes.
Servicers are expected to be `async def` (or async generators for streamed responses).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from services.runtime.errors import ServiceError, rich_status
from services.runtime.logging import request_id_var
from services.runtime.metrics import GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_STARTED
from services.runtime.security import AuthHook, CallIdentity, Principal

__all__ = [
    "REQUEST_ID_METADATA_KEY",
    "AuthInterceptor",
    "ErrorMappingInterceptor",
    "MetricsInterceptor",
    "RequestIdInterceptor",
    "current_principal",
    "default_interceptors",
    "unprotected_methods",
]

logger = logging.getLogger(__name__)

REQUEST_ID_METADATA_KEY = "x-request-id"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Caller-supplied ids are echoed into logs and trailers, so only accept a tame shape.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

principal_var: ContextVar[Principal | None] = ContextVar("langerhans_principal", default=None)

if TYPE_CHECKING:
    _ServerInterceptor = aio.ServerInterceptor[Any, Any]
    _Context = aio.ServicerContext[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = aio.ServerInterceptor
    _Context = aio.ServicerContext
    _Handler = grpc.RpcMethodHandler

Around = Callable[[str, _Context], AbstractAsyncContextManager[None]]


def current_principal() -> Principal | None:
    """The caller admitted by `AuthInterceptor` for the current call (None if unprotected)."""
    return principal_var.get()


def _metadata_value(context: _Context, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


async def _drain(result: Any) -> AsyncIterator[Any]:
    """Iterate a response stream whether the servicer gave an async or a plain iterator."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        for item in result:
            yield item


def _wrap(handler: _Handler, method: str, around: Around) -> _Handler:
    """A copy of `handler` whose behaviour runs inside `around(method, context)`."""
    deserializer, serializer = handler.request_deserializer, handler.response_serializer

    if handler.unary_unary is not None or handler.stream_unary is not None:
        inner: Callable[..., Any] | None = handler.unary_unary or handler.stream_unary
        assert inner is not None

        async def unary_response(request: Any, context: _Context) -> Any:
            async with around(method, context):
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary is not None
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(unary_response, deserializer, serializer)

    inner_stream: Callable[..., Any] | None = handler.unary_stream or handler.stream_stream
    assert inner_stream is not None
    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream is not None
        else grpc.stream_stream_rpc_method_handler
    )
    if inspect.isasyncgenfunction(inner_stream) or inspect.isgeneratorfunction(inner_stream):

        async def stream_response(request: Any, context: _Context) -> AsyncIterator[Any]:
            async with around(method, context):
                async for item in _drain(inner_stream(request, context)):
                    yield item

        return factory(stream_response, deserializer, serializer)

    # A coroutine that writes its responses with `await context.write(...)` (e.g. health Watch).
    async def written_stream(request: Any, context: _Context) -> None:
        async with around(method, context):
            await inner_stream(request, context)

    return factory(written_stream, deserializer, serializer)


class _WrappingInterceptor(_ServerInterceptor):
    """Base: wrap every handler's behaviour in `self.around`."""

    def around(self, method: str, context: _Context) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def applies_to(self, method: str) -> bool:
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        # No handler means "method not found": let gRPC answer UNIMPLEMENTED itself.
        if handler is None or not self.applies_to(handler_call_details.method):
            return handler  # type: ignore[return-value]
        return _wrap(handler, handler_call_details.method, self.around)


class RequestIdInterceptor(_WrappingInterceptor):
    """Request id from `x-request-id` (or a new one) in a contextvar and the trailers."""

    @asynccontextmanager
    async def around(self, method: str, context: _Context) -> AsyncIterator[None]:
        supplied = _metadata_value(context, REQUEST_ID_METADATA_KEY)
        request_id = (
            supplied if supplied and _REQUEST_ID_RE.fullmatch(supplied) else uuid.uuid4().hex
        )
        context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        token = request_id_var.set(request_id)
        try:
            yield
        finally:
            _reset(request_id_var, token)


def _reset(var: ContextVar[Any], token: Token[Any]) -> None:
    """Undo `var.set`; a streaming call closed from another task (a hub that disconnected,
    finalised by the event loop) runs this in a different Context, which is being discarded
    with its value, so there is nothing left to undo there."""
    with contextlib.suppress(ValueError):
        var.reset(token)


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name


def _call_type(handler: _Handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK.name


class MetricsInterceptor(_ServerInterceptor):
    """`grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]
        service, name = _split_method(handler_call_details.method)
        call_type = _call_type(handler)

        @asynccontextmanager
        async def around(_method: str, context: _Context) -> AsyncIterator[None]:
            GRPC_STARTED.labels(service, name, call_type).inc()
            started = time.perf_counter()
            code = grpc.StatusCode.OK.name
            try:
                yield
                code = _code_name(context.code())
            except aio.AbortError:
                code = _code_name(context.code())
                raise
            except BaseException as error:
                code = (
                    grpc.StatusCode.CANCELLED.name
                    if isinstance(error, GeneratorExit | asyncio.CancelledError)
                    else grpc.StatusCode.UNKNOWN.name
                )
                raise
            finally:
                GRPC_HANDLED.labels(service, name, call_type, code).inc()
                GRPC_HANDLING_SECONDS.labels(service, name, call_type).observe(
                    time.perf_counter() - started
                )

        return _wrap(handler, handler_call_details.method, around)


class ErrorMappingInterceptor(_WrappingInterceptor):
    """`ServiceError` → its status code (with rich details); anything else → INTERNAL."""

    @asynccontextmanager
    async def around(self, method: str, context: _Context) -> AsyncIterator[None]:
        try:
            yield
        except aio.AbortError:
            raise  # the servicer already chose a status
        except ServiceError as error:
            logger.info(
                "rpc failed: %s",
                error.message,
                extra={"grpc_method": method, "grpc_code": error.status_code.name},
            )
            await self._abort(context, error)
        except Exception as error:
            # The caller gets no internals, only the request id to quote; the log has it all.
            logger.exception("unhandled error in %s", method, extra={"grpc_method": method})
            await self._abort(context, error)

    @staticmethod
    async def _abort(context: _Context, error: Exception) -> None:
        status = rich_status(error)
        message = status.message
        request_id = request_id_var.get()
        if not isinstance(error, ServiceError) and request_id:
            message = f"{message} (request id {request_id})"
            status.message = message
        trailing = [
            (key, value)
            for key, value in (context.trailing_metadata() or ())
            if key != _STATUS_DETAILS_KEY
        ]
        if status.details:
            trailing.append((_STATUS_DETAILS_KEY, status.SerializeToString()))
        code = error.status_code if isinstance(error, ServiceError) else grpc.StatusCode.INTERNAL
        await context.abort(code, message, tuple(trailing))


# Health checks and reflection must answer without credentials (kubelet probes, grpcurl).
_OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def unprotected_methods(method: str) -> bool:
    """True for the stock health and reflection services."""
    return _split_method(method)[0] in _OPEN_SERVICES


def _peer_cert_names(context: _Context) -> tuple[str, ...]:
    auth = context.auth_context() or {}
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for raw in auth.get(key, ()):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name not in names:
                names.append(name)
    return tuple(names)


class AuthInterceptor(_WrappingInterceptor):
    """Runs `hook` for every method except the open ones (`exempt(method)` is True)."""

    def __init__(
        self,
        hook: AuthHook,
        exempt: Callable[[str], bool] = unprotected_methods,
        only: Collection[str] | None = None,
    ) -> None:
        self._hook = hook
        self._exempt = exempt
        self._only = frozenset(only) if only is not None else None

    def applies_to(self, method: str) -> bool:
        if self._exempt(method):
            return False
        return self._only is None or method in self._only

    @asynccontextmanager
    async def around(self, method: str, context: _Context) -> AsyncIterator[None]:
        metadata = {
            key: value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        identity = CallIdentity(
            method=method,
            metadata=metadata,
            peer=context.peer(),
            peer_cert_names=_peer_cert_names(context),
        )
        principal = await self._hook(identity)
        token = principal_var.set(principal)
        try:
            yield
        finally:
            _reset(principal_var, token)


def default_interceptors(
    auth_hook: AuthHook | None = None,
    *,
    auth_exempt: Callable[[str], bool] = unprotected_methods,
    auth_only: Collection[str] | None = None,
) -> list[_ServerInterceptor]:
    """The interceptor chain every service uses, outermost first."""
    chain: list[_ServerInterceptor] = [
        RequestIdInterceptor(),
        MetricsInterceptor(),
        ErrorMappingInterceptor(),
    ]
    if auth_hook is not None:
        chain.append(AuthInterceptor(auth_hook, auth_exempt, auth_only))
    return chain
