"""The registry of document kinds: which model validates which apiVersion and kind."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.agent import AgentDocument
from schemas.alerting import AlertRoutingDocument, ReceiverDocument
from schemas.base import API_VERSION, CANARY_CHECKER_API_VERSION, StrictModel
from schemas.canary import CanaryDocument
from schemas.gateway import GatewayFileModel
from schemas.maintenance import MaintenanceDocument
from schemas.region import RegionDocument
from schemas.route import RouteDocument

Document = (
    RegionDocument
    | AgentDocument
    | CanaryDocument
    | RouteDocument
    | ReceiverDocument
    | AlertRoutingDocument
    | MaintenanceDocument
)

KINDS: dict[str, type[StrictModel]] = {
    "Region": RegionDocument,
    "Agent": AgentDocument,
    "Canary": CanaryDocument,
    "Route": RouteDocument,
    "Receiver": ReceiverDocument,
    "AlertRouting": AlertRoutingDocument,
    "Maintenance": MaintenanceDocument,
}

API_VERSIONS: dict[str, frozenset[str]] = {
    API_VERSION: frozenset(KINDS),
    CANARY_CHECKER_API_VERSION: frozenset({"Canary"}),
}

# Models published as JSON Schema, by file stem.
JSON_SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "region": RegionDocument,
    "agent": AgentDocument,
    "canary": CanaryDocument,
    "route": RouteDocument,
    "gateway-routes": GatewayFileModel,
    "receiver": ReceiverDocument,
    "alert-routing": AlertRoutingDocument,
    "maintenance": MaintenanceDocument,
}
