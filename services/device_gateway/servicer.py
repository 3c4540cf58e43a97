"""gRPC translation for DeviceGatewayService; each listener allows only its own methods.

- hub listener (mutual TLS, platform device CA): Connect only;
- enrolment listener (server TLS, no client certificate): Enroll only;
- service listener (the platform's service port): SendCommand, GetCommandStatus,
  GetLoopStatus, ListDevices, and the admin methods CreateEnrollmentToken and RevokeDevice
  (bearer admin token; the development token only from loopback in development).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Collection
from typing import Any

import grpc
from grpc import aio
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc

from services.device_gateway.pki import DeviceIdentity, identity_from_certificate
from services.device_gateway.service import DeviceGateway, HubStream
from services.runtime.errors import PermissionDenied, ServiceError, Unauthenticated, Unavailable
from services.runtime.security import token_digest

__all__ = ["ENROLL_METHODS", "HUB_METHODS", "SERVICE_METHODS", "DeviceGatewayServicer"]

log = logging.getLogger(__name__)

HUB_METHODS = frozenset({"Connect"})
ENROLL_METHODS = frozenset({"Enroll"})
SERVICE_METHODS = frozenset(
    {
        "SendCommand",
        "GetCommandStatus",
        "GetLoopStatus",
        "ListDevices",
        "CreateEnrollmentToken",
        "RevokeDevice",
    }
)
_HELLO_TIMEOUT_S = 30.0
Context = aio.ServicerContext[Any, Any]


def _is_loopback(peer: str) -> bool:
    return peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:"))


class DeviceGatewayServicer(gw_grpc.DeviceGatewayServiceServicer):
    def __init__(
        self,
        gateway: DeviceGateway,
        allowed: Collection[str],
        *,
        admin_digests: Collection[str] = (),
        dev_admin_digest: str | None = None,
        heartbeat_interval_s: float = 15.0,
    ) -> None:
        self._gw = gateway
        self._allowed = frozenset(allowed)
        self._admin = frozenset(admin_digests)
        self._dev_admin = dev_admin_digest
        self._heartbeat_s = heartbeat_interval_s

    async def _gate(self, method: str, context: Context) -> None:
        if method not in self._allowed:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served on this port"
            )

    def _require_admin(self, context: Context) -> str:
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("an admin bearer token is required")
        digest = token_digest(token.strip())
        for known in self._admin:
            if hmac.compare_digest(digest, known):
                if known == self._dev_admin and not _is_loopback(context.peer()):
                    raise PermissionDenied(
                        "the development admin token is accepted from loopback only"
                    )
                return "admin"
        raise Unauthenticated("unknown admin token")

    # ------------------------------------------------------------------ enrolment
    async def Enroll(  # noqa: N802
        self, request: gw_pb2.EnrollRequest, context: Context
    ) -> gw_pb2.EnrollResponse:
        await self._gate("Enroll", context)
        return await self._gw.enroll(request)

    async def CreateEnrollmentToken(  # noqa: N802
        self, request: gw_pb2.CreateEnrollmentTokenRequest, context: Context
    ) -> gw_pb2.CreateEnrollmentTokenResponse:
        await self._gate("CreateEnrollmentToken", context)
        self._require_admin(context)
        token, expires_at = await self._gw.create_enrollment_token(
            request.patient_id, request.requested_by
        )
        response = gw_pb2.CreateEnrollmentTokenResponse(enrollment_token=token)
        response.expires_at.FromDatetime(expires_at)
        return response

    # ------------------------------------------------------------------ the stream
    @staticmethod
    def _identity(context: Context) -> DeviceIdentity | None:
        auth = context.auth_context() or {}
        certs = list(auth.get("x509_pem_cert") or [])
        if len(certs) != 1:
            return None
        return identity_from_certificate(certs[0])

    async def Connect(  # noqa: N802
        self, request_iterator: AsyncIterator[gw_pb2.ConnectRequest], context: Context
    ) -> AsyncIterator[gw_pb2.ConnectResponse]:
        await self._gate("Connect", context)
        identity = self._identity(context)
        if identity is None:
            log.warning("Connect without a device certificate", extra={"peer": context.peer()})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a device certificate is required")
        requests = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(requests), _HELLO_TIMEOUT_S)
            stream = await self._gw.open_stream(identity, first)
        except StopAsyncIteration:
            return
        except ServiceError as exc:
            await context.abort(exc.status_code, exc.message)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello")
        reader = asyncio.create_task(self._read(stream, requests))
        beats = asyncio.create_task(self._beat(stream))
        try:
            while (message := await stream.outgoing.get()) is not None:
                yield message
        finally:
            beats.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            await self._gw.close_stream(stream)
        if stream.failure is not None:
            await context.abort(stream.failure.status_code, stream.failure.message)
        if stream.closed_reason == "certificate revoked":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "certificate revoked")

    async def _read(
        self, stream: HubStream, requests: AsyncIterator[gw_pb2.ConnectRequest]
    ) -> None:
        try:
            async for request in requests:
                await self._gw.handle(stream, request)
            stream.close("hub closed the stream")
        except ServiceError as exc:
            stream.failure = exc
            stream.close("error: " + exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hub stream failed", extra={"device_id": stream.identity.device_id})
            # end with an error status, never OK: the hub must not take it for a clean close
            stream.failure = Unavailable("the gateway failed on this stream; reconnect")
            stream.close("internal error")

    async def _beat(self, stream: HubStream) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            self._gw.heartbeat(stream)

    # ------------------------------------------------------------------ commands and status
    async def SendCommand(  # noqa: N802
        self, request: gw_pb2.SendCommandRequest, context: Context
    ) -> gw_pb2.SendCommandResponse:
        await self._gate("SendCommand", context)
        return await self._gw.send_command(request.signed_command)

    async def GetCommandStatus(  # noqa: N802
        self, request: gw_pb2.GetCommandStatusRequest, context: Context
    ) -> gw_pb2.GetCommandStatusResponse:
        await self._gate("GetCommandStatus", context)
        return gw_pb2.GetCommandStatusResponse(
            status=await self._gw.command_status(request.command_id)
        )

    async def GetLoopStatus(  # noqa: N802
        self, request: gw_pb2.GetLoopStatusRequest, context: Context
    ) -> gw_pb2.GetLoopStatusResponse:
        await self._gate("GetLoopStatus", context)
        return await self._gw.loop_status(request.patient_id)

    async def ListDevices(  # noqa: N802
        self, request: gw_pb2.ListDevicesRequest, context: Context
    ) -> gw_pb2.ListDevicesResponse:
        await self._gate("ListDevices", context)
        return gw_pb2.ListDevicesResponse(devices=await self._gw.list_devices(request.patient_id))

    async def RevokeDevice(  # noqa: N802
        self, request: gw_pb2.RevokeDeviceRequest, context: Context
    ) -> gw_pb2.RevokeDeviceResponse:
        await self._gate("RevokeDevice", context)
        self._require_admin(context)
        device = await self._gw.revoke_device(
            request.device_id, request.reason, request.requested_by
        )
        return gw_pb2.RevokeDeviceResponse(device=device)
