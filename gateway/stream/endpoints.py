"""WebSocket `/api/v1/stream`: live readings, decisions, loop status and alerts.

Protocol (JSON text frames; see docs/gateway.md):
- Auth, never in the URL: either offer the subprotocols `langerhans.v1` and
  `bearer.<access token>` (the server answers `langerhans.v1`), or send
  `{"type": "auth", "access_token": "…"}` as the first message within 10 s. Before the token
  expires, send another `auth` message with a fresh token, or the server closes with 4401.
- `{"type": "subscribe", "person_ids": [...]}` → `{"type": "subscribed", "person_ids": [...],
  "refused": [...]}`; each id is checked against the caller's relation (view; alerts also need
  receive_alerts). `{"type": "unsubscribe", "person_ids": [...]}`, `{"type": "ping"}`.
- Events: `{"type": "reading"|"decision"|"loop_status"|"alert", "person_id", "published_at",
  "data"}`; `{"type": "gap", "dropped": n}` when a slow client lost the oldest messages;
  `{"type": "unsubscribed", "person_id", "reason"}` when access was revoked.
- Permissions and the token's session are re-checked every `stream_recheck_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.orm import Session, sessionmaker

from gateway.access import Caller, Permission, Role, permissions_for
from gateway.deps import access_guard, verify_live_token
from gateway.errors import AppError
from gateway.runtime import Runtime
from gateway.security.tokens import APP_AUDIENCE, AccessClaims
from gateway.stream.hub import StreamHub, Subscriber

__all__ = ["SUBPROTOCOL", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["live stream"])

SUBPROTOCOL = "langerhans.v1"
TOKEN_PREFIX = "bearer."  # noqa: S105 - a subprotocol prefix, not a secret
AUTH_TIMEOUT_S = 10.0
MAX_SUBSCRIPTIONS = 50
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008


@dataclass
class _Conn:
    claims: AccessClaims
    token: str
    reads: sessionmaker[Session]
    perms: dict[str, frozenset[Permission]] = field(default_factory=dict)

    def wants(self, person_id: str, event_type: str) -> bool:
        granted = self.perms.get(person_id)
        if not granted:
            return False
        needed = Permission.RECEIVE_ALERTS if event_type == "alert" else Permission.VIEW
        return needed in granted


def _check(
    runtime: Runtime, reads: sessionmaker[Session], token: str, person_ids: list[str]
) -> tuple[AccessClaims, dict[str, frozenset[Permission]]]:
    """Verify the token is live and read the caller's permissions (one short read-only
    transaction: on SQLite it does not take the write lock, so a thousand followers
    connecting at once do not queue on it)."""
    with reads() as session:
        try:
            claims = verify_live_token(runtime, session, token, APP_AUDIENCE)
            caller = Caller(claims.subject, Role(claims.role), claims.session_id)
            perms = {pid: permissions_for(session, caller, pid) for pid in person_ids}
        finally:
            session.rollback()
    return claims, perms


async def _send(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(message, default=str))


async def _error(ws: WebSocket, code: str, message: str) -> None:
    await _send(ws, {"type": "error", "code": code, "message": message})


def _valid_ids(ids: object) -> bool:
    return isinstance(ids, list) and all(isinstance(i, str) and 0 < len(i) <= 36 for i in ids)


@router.websocket("/api/v1/stream")
async def stream(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    hub: StreamHub = ws.app.state.stream_hub
    reads = access_guard(ws.app).read_sessions
    offered = list(ws.scope.get("subprotocols") or [])
    token = next((p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)), None)
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        if token is None:
            first = json.loads(await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S))
            if not isinstance(first, dict) or first.get("type") != "auth":
                raise AppError("the first message must be an auth message")
            token = str(first.get("access_token", ""))
        claims, _ = await anyio.to_thread.run_sync(_check, runtime, reads, token, [])
    except (AppError, TimeoutError, ValueError) as exc:
        with contextlib.suppress(Exception):
            await _error(ws, "unauthenticated", str(exc))
            await ws.close(CLOSE_UNAUTHENTICATED)
        return
    except WebSocketDisconnect:
        return
    conn = _Conn(claims, token, reads)
    subscriber = Subscriber(runtime.settings.stream_queue_size, conn.wants)
    await _send(
        ws, {"type": "ready", "account_id": claims.subject, "expires_at": claims.expires_at}
    )
    tasks = [
        asyncio.create_task(_reader(ws, runtime, hub, conn, subscriber)),
        asyncio.create_task(_writer(ws, subscriber)),
        asyncio.create_task(_rechecker(ws, runtime, hub, conn, subscriber)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for pid in list(conn.perms):
            hub.unsubscribe(pid, subscriber)
        subscriber.close()
        with contextlib.suppress(Exception):
            await ws.close()


async def _reader(
    ws: WebSocket, runtime: Runtime, hub: StreamHub, conn: _Conn, subscriber: Subscriber
) -> None:
    while True:
        try:
            message = json.loads(await ws.receive_text())
        except WebSocketDisconnect:
            return
        except ValueError:
            await _error(ws, "invalid_request", "not JSON")
            continue
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            await _send(ws, {"type": "pong"})
        elif kind == "auth":
            token = str(message.get("access_token", ""))
            try:
                claims, _ = await anyio.to_thread.run_sync(_check, runtime, conn.reads, token, [])
            except AppError as exc:
                await _error(ws, "unauthenticated", str(exc))
                continue
            if claims.subject != conn.claims.subject:
                await _error(ws, "forbidden", "other account")
                continue
            conn.claims, conn.token = claims, token
            await _send(
                ws, {"type": "ready", "account_id": claims.subject, "expires_at": claims.expires_at}
            )
        elif kind in ("subscribe", "unsubscribe"):
            ids = message.get("person_ids")
            if not isinstance(ids, list) or not all(
                isinstance(i, str) and 0 < len(i) <= 36 for i in ids
            ):
                await _send(
                    ws,
                    {
                        "type": "error",
                        "code": "invalid_request",
                        "message": "person_ids must be a list of ids",
                    },
                )
                continue
            if kind == "unsubscribe":
                for pid in ids:
                    conn.perms.pop(pid, None)
                    hub.unsubscribe(pid, subscriber)
                await _send(ws, {"type": "unsubscribed", "person_ids": ids, "reason": "requested"})
                continue
            if len(set(ids) | set(conn.perms)) > MAX_SUBSCRIPTIONS:
                await _send(
                    ws,
                    {
                        "type": "error",
                        "code": "invalid_request",
                        "message": f"at most {MAX_SUBSCRIPTIONS} people",
                    },
                )
                continue
            try:
                _, perms = await anyio.to_thread.run_sync(
                    _check, runtime, conn.reads, conn.token, ids
                )
            except AppError as exc:
                await _error(ws, "unauthenticated", str(exc))
                await ws.close(CLOSE_UNAUTHENTICATED)
                return
            allowed = [pid for pid, p in perms.items() if Permission.VIEW in p]
            for pid in allowed:
                conn.perms[pid] = perms[pid]
                hub.subscribe(pid, subscriber)
            refused = [pid for pid in ids if pid not in allowed]
            await _send(ws, {"type": "subscribed", "person_ids": allowed, "refused": refused})
        else:
            await _error(ws, "invalid_request", "unknown message type")


async def _writer(ws: WebSocket, subscriber: Subscriber) -> None:
    while not subscriber.closed:
        for message in await subscriber.next_batch():
            await ws.send_text(message)


async def _rechecker(
    ws: WebSocket, runtime: Runtime, hub: StreamHub, conn: _Conn, subscriber: Subscriber
) -> None:
    interval = runtime.settings.stream_recheck_s
    while True:
        await asyncio.sleep(interval)
        if runtime.clock.now() >= conn.claims.expires_at:
            await _error(ws, "unauthenticated", "token expired")
            await ws.close(CLOSE_UNAUTHENTICATED)
            return
        try:
            _, perms = await anyio.to_thread.run_sync(
                _check, runtime, conn.reads, conn.token, list(conn.perms)
            )
        except AppError as exc:
            await _error(ws, "unauthenticated", str(exc))
            await ws.close(CLOSE_UNAUTHENTICATED)
            return
        for pid, granted in perms.items():
            if Permission.VIEW not in granted:
                conn.perms.pop(pid, None)
                hub.unsubscribe(pid, subscriber)
                await _send(
                    ws, {"type": "unsubscribed", "person_id": pid, "reason": "access revoked"}
                )
            elif pid in conn.perms:
                conn.perms[pid] = granted
