"""Data-plane adapters: apply a route's traffic weights to a gateway and read its metrics back.

`base` is the small interface every data plane implements (set weights, get weights, read
per-group metrics); `nginx` is the adapter that runs nginx; `memory` keeps weights and
recorded traffic in memory (controller tests); `accesslog` turns nginx's JSON access log into
per-group metrics without I/O.
"""

from __future__ import annotations

from reconciler.gateway.base import Gateway, GatewayError, GroupMetrics
from reconciler.gateway.memory import MemoryGateway
from reconciler.gateway.nginx import NginxGateway

__all__ = ["Gateway", "GatewayError", "GroupMetrics", "MemoryGateway", "NginxGateway"]
