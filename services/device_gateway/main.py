"""device-gateway entry point: `langerhans serve device-gateway`.

One process serves three listeners: the service port (`LANGERHANS_GRPC_PORT`, default 50051,
the platform's usual gRPC bootstrap), the hub port (mutual TLS, `LANGERHANS_HUB_PORT`, default
50061) and the enrolment port (server TLS, `LANGERHANS_ENROLL_PORT`, default 50062). Workers:
the outbox relay, the per-replica pump.commands.v1 consumer and the expiry sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from grpc import aio
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_gateway_service_pb2_grpc as gw_grpc
from sqlalchemy.orm import sessionmaker

from services.device_gateway import repository
from services.device_gateway.events import CommandConsumer
from services.device_gateway.pki import DeviceCa, ensure_device_ca, load_device_ca
from services.device_gateway.service import DeviceGateway
from services.device_gateway.servicer import (
    ENROLL_METHODS,
    HUB_METHODS,
    SERVICE_METHODS,
    DeviceGatewayServicer,
)
from services.device_gateway.settings import DEV_ADMIN_TOKEN, DeviceGatewaySettings
from services.runtime import migrations
from services.runtime.command_signing import (
    TrustedKeys,
    dev_signing_key_paths,
    key_id_for,
    load_public_key,
)
from services.runtime.db import create_service_engine
from services.runtime.grpc_server import Worker, run_service, servicer
from services.runtime.interceptors import default_interceptors
from services.runtime.kafka.producer import EventProducer
from services.runtime.logging import configure_logging
from services.runtime.outbox import OutboxRelay
from services.runtime.security import token_digest
from services.runtime.writer_lock import serialize_writers

__all__ = ["main_async", "serve"]

log = logging.getLogger(__name__)
SERVICE_NAME: str = gw_pb2.DESCRIPTOR.services_by_name["DeviceGatewayService"].full_name


def _load_ca(settings: DeviceGatewaySettings) -> tuple[DeviceCa, Path, Path]:
    if settings.device_ca_cert_path and settings.device_ca_key_path:
        ca = load_device_ca(settings.device_ca_cert_path, settings.device_ca_key_path)
    else:
        ca = ensure_device_ca(settings.pki_dir)
    if settings.hub_tls_cert_path and settings.hub_tls_key_path:
        return ca, settings.hub_tls_cert_path, settings.hub_tls_key_path
    cert_path, key_path = ca.issue_server_certificate(
        settings.pki_dir, ["localhost", "127.0.0.1", settings.hub_host, "device-gateway"]
    )
    return ca, cert_path, key_path


def _command_keys(settings: DeviceGatewaySettings) -> tuple[TrustedKeys, dict[str, bytes]]:
    paths = list(settings.command_public_key_paths) or [dev_signing_key_paths()[1]]
    keys = [load_public_key(p) for p in paths]
    raw = {
        key_id_for(k): k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for k in keys
    }
    return TrustedKeys(keys), raw


async def main_async(settings: DeviceGatewaySettings, stop: asyncio.Event | None = None) -> None:
    clock = settings.clock()
    # every replica runs this at start; the migration lock makes them apply it once
    migrations.upgrade(
        "device-gateway", database_url=settings.database_url, target_metadata=repository.metadata
    )
    engine = create_service_engine("device-gateway", settings.database_url)
    # the database thread and the outbox relay take turns without SQLite's sleeping back-off
    serialize_writers(engine)
    sessions = sessionmaker(engine)
    ca, hub_cert, hub_key = _load_ca(settings)
    trusted, raw_keys = _command_keys(settings)
    producer = EventProducer(settings.kafka_bootstrap_servers, source="device-gateway", clock=clock)
    relay = OutboxRelay(sessions, producer, clock=clock, poll_interval_s=0.05)
    gateway = DeviceGateway(
        sessions=sessions,
        clock=clock,
        ca=ca,
        command_keys=trusted,
        command_key_bytes=raw_keys,
        replica_id=settings.replica_id,
        token_ttl=settings.enrollment_token_ttl,
        certificate_validity=dt.timedelta(days=settings.certificate_validity_days),
        hub_offline_after_s=settings.hub_offline_after_s,
        peripheral_silent_after_s=settings.peripheral_silent_after_s,
        on_outbox_write=relay.wake,
        in_flight_grace_s=settings.in_flight_grace_s,
    )
    dev_digest = token_digest(DEV_ADMIN_TOKEN) if settings.environment == "development" else None

    def make_servicer(methods: frozenset[str]) -> DeviceGatewayServicer:
        return DeviceGatewayServicer(
            gateway,
            methods,
            admin_digests=settings.admin_digests(),
            dev_admin_digest=dev_digest,
            heartbeat_interval_s=settings.cloud_heartbeat_interval_s,
        )

    key_pair = [(hub_key.read_bytes(), hub_cert.read_bytes())]
    hub_server = aio.server(
        interceptors=default_interceptors(None),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_concurrent_streams", 100_000),
            # New calls wait in gRPC core until the Python server picks them up. Past 1,000
            # waiting (the default) core sheds new ones at random, and in a reconnect storm
            # about 5 % of hubs saw CANCELLED before their welcome. Allow a real fleet's storm.
            ("grpc.server.max_pending_requests", 10_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
        ],
    )
    gw_grpc.add_DeviceGatewayServiceServicer_to_server(make_servicer(HUB_METHODS), hub_server)
    hub_port = hub_server.add_secure_port(
        f"{settings.hub_host}:{settings.hub_port}",
        grpc.ssl_server_credentials(
            key_pair, root_certificates=ca.certificate_pem, require_client_auth=True
        ),
    )
    gw_grpc.add_DeviceGatewayServiceServicer_to_server(
        make_servicer(ENROLL_METHODS),
        enroll_server := aio.server(
            interceptors=default_interceptors(None), options=[("grpc.so_reuseport", 0)]
        ),
    )
    enroll_port = enroll_server.add_secure_port(
        f"{settings.hub_host}:{settings.enroll_port}", grpc.ssl_server_credentials(key_pair)
    )
    if hub_port == 0 or enroll_port == 0:
        raise RuntimeError("could not bind the hub or enrolment port")
    consumer = CommandConsumer(
        settings.kafka_bootstrap_servers, settings.replica_id, gateway.command_from_bus_threadsafe
    )

    async def hub_listeners(stop_event: asyncio.Event) -> None:
        gateway.bind_loop()
        await hub_server.start()
        await enroll_server.start()
        relay.start()
        consumer.start()
        log.info(
            "device-gateway hub listeners",
            extra={
                "hub_port": hub_port,
                "enroll_port": enroll_port,
                "replica_id": settings.replica_id,
            },
        )
        next_revocation_check = 0.0
        try:
            while not stop_event.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), settings.expiry_sweep_interval_s)
                try:
                    await gateway.expire_queued()
                    await gateway.deliver_pending()
                    await gateway.mark_overdue_uncertain()
                    if time.monotonic() >= next_revocation_check:
                        await gateway.close_revoked()
                        next_revocation_check = (
                            time.monotonic() + settings.cloud_heartbeat_interval_s
                        )
                except Exception:
                    log.exception("expiry sweep failed")
        finally:
            for stream in list(gateway.streams.values()):
                stream.close("gateway stopping")
            await hub_server.stop(2.0)
            await enroll_server.stop(1.0)
            await asyncio.to_thread(consumer.stop)
            await asyncio.to_thread(relay.stop)
            producer.close()
            gateway.close()

    workers: list[Worker] = [hub_listeners]
    await run_service(
        settings,
        [
            servicer(
                SERVICE_NAME,
                gw_grpc.add_DeviceGatewayServiceServicer_to_server,
                make_servicer(SERVICE_METHODS),
            )
        ],
        workers=workers,
        metrics=settings.metrics_port != 0,
        stop=stop,
    )


def serve() -> int:
    settings = DeviceGatewaySettings()
    configure_logging(settings)
    asyncio.run(main_async(settings))
    return 0
