"""`ServicesDep`: the app's backend clients (set up in `gateway.app.create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.clients.services import ServiceClients

__all__ = ["ServicesDep", "get_services"]


def get_services(request: Request) -> ServiceClients:
    services = request.app.state.services
    assert isinstance(services, ServiceClients)
    return services


ServicesDep = Annotated[ServiceClients, Depends(get_services)]
