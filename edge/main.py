"""`langerhans edge`: one edge agent (hub), or `--fleet N` simulated hubs in one process."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.settings import EdgeSettings
from services.runtime.logging import configure_logging

__all__ = ["main", "serve"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langerhans edge", description=__doc__)
    parser.add_argument("--fleet", type=int, default=0, help="run N simulated hubs in one process")
    parser.add_argument("--hub", type=int, default=0, help="index of the single simulated hub")
    parser.add_argument(
        "--name-prefix",
        default="sim-hub",
        help="simulated hub names (other than sim-hub: "
        "people of their own, not the platform's sim-person-NNNN)",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="root of the hubs' state")
    parser.add_argument("--gateway", default=None, help="device gateway service address")
    parser.add_argument("--hub-addr", default=None, help="device gateway hub (mTLS) address")
    parser.add_argument("--enroll-addr", default=None, help="device gateway enrolment address")
    parser.add_argument("--token", default=None, help="one-time enrolment token")
    parser.add_argument(
        "--devices",
        type=Path,
        default=None,
        help="Unix socket of the pump and CGM (python -m edge.devsim); default: in-process sim",
    )
    parser.add_argument(
        "--enroll-only", action="store_true", help="enrol (with --devices) and exit"
    )
    parser.add_argument(
        "--ack-loss", type=float, default=0.0, help="simulated lost pump acks (0–1)"
    )
    return parser


async def _run(settings: EdgeSettings, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.devices is not None:
        # the hub alone: no simulator in this process (see edge.devsim)
        from edge.hub import build_remote_hub

        agent = await build_remote_hub(settings, args.devices, enroll_only=args.enroll_only)
        if agent is None:
            return
        try:
            await agent.run(stop)
        finally:
            agent.close()
        return
    # the simulator (numpy, the patient model) is imported only for in-process simulated hubs
    from edge.fleet import build_simulated_hub, run_fleet

    if args.fleet > 0:
        await run_fleet(settings, args.fleet, stop)
        return
    hub = await build_simulated_hub(
        settings, args.hub, ack_loss_rate=args.ack_loss, name_prefix=args.name_prefix
    )
    try:
        await hub.agent.run(stop)
    finally:
        hub.agent.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    overrides: dict[str, Any] = {}
    if args.state_dir is not None:
        overrides["state_root"] = args.state_dir
    if args.gateway:
        overrides["device_gateway_addr"] = args.gateway
    if args.hub_addr:
        overrides["hub_addr"] = args.hub_addr
    if args.enroll_addr:
        overrides["enroll_addr"] = args.enroll_addr
    if args.token:
        overrides["enrollment_token"] = args.token
    settings = EdgeSettings(**overrides)
    configure_logging(settings)
    asyncio.run(_run(settings, args))
    return 0


def serve() -> int:
    return main([])


if __name__ == "__main__":
    raise SystemExit(main())
