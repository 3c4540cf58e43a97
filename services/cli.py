"""The `langerhans` command: one CLI for every deployable.

langerhans serve <service>       run one service (gRPC + Kafka consumers + /metrics)
langerhans kafka up|down|status  the local single-node Kafka broker
langerhans topics                create or reconcile the declared topics
langerhans edge                  the edge agent on a hub
langerhans run                   everything on one machine, with simulated people
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["SERVICES", "main"]

# service name -> "module:function"; the function takes no arguments and blocks until stopped.
SERVICES: dict[str, str] = {
    "device-gateway": "services.device_gateway.main:serve",
    "cgm-ingestion": "services.cgm_ingestion.main:serve",
    "dosing-engine": "services.dosing_engine.main:serve",
    "alerts": "services.alerts.main:serve",
    "gateway": "gateway.main:serve",
}


def _load(target: str) -> Callable[[], int | None]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    function: Callable[[], int | None] = getattr(module, attr)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="langerhans", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted(SERVICES))

    kafka = commands.add_parser("kafka", help="the local single-node Kafka broker")
    kafka.add_argument("action", choices=["up", "down", "status"])

    commands.add_parser("topics", help="create or reconcile the declared Kafka topics")
    migrate = commands.add_parser("migrate", help="apply a service's database migrations")
    migrate.add_argument("service", choices=sorted(SERVICES))
    # `edge` options belong to the agent's own parser (argparse.REMAINDER cannot take a
    # leading `--option`), so `main` hands them over before parsing.
    commands.add_parser("edge", help="run the edge agent (hub); options go to the agent")

    run = commands.add_parser("run", help="the whole platform with simulated people")
    run.add_argument("--people", type=int, default=None, help="number of simulated people")
    run.add_argument("--speed", type=float, default=None, help="simulated clock speed factor")

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["edge"]:
        from edge.main import main as edge_main

        return edge_main(arguments[1:])
    args = parser.parse_args(arguments)
    if args.command == "serve":
        return _load(SERVICES[args.service])() or 0
    if args.command == "kafka":
        from services.runtime.local_kafka import kafka_command

        return kafka_command(args.action)
    if args.command == "topics":
        from services.runtime.topics import reconcile_topics_command

        return reconcile_topics_command()
    if args.command == "migrate":
        from services.runtime.migrations import migrate_command

        return migrate_command(args.service)
    # argparse admits only the commands above, so what is left is `run`.
    from services.runtime.supervisor import run_platform

    return run_platform(people=args.people, speed=args.speed)


if __name__ == "__main__":
    sys.exit(main())
