"""The public plugin API of s360bridge: what a plugin imports, and nothing else.

A plugin (built-in or third-party) imports only this module and its own package::

    from s360bridge.core.api import Stream, Target, hookimpl, require

    require(4)  # stops loading with a clear message when the installed API is older

Every name here is documented in docs/plugins.md; ``API_VERSION`` grows when a name is added
or a contract changes, so that a plugin can say what it needs.
"""

from __future__ import annotations

from s360bridge.core import __version__
from s360bridge.core.cli.common import config_option, institution_of, open_bridge
from s360bridge.core.config import Institution
from s360bridge.core.config_secrets import Secret, reveal
from s360bridge.core.connectors import crm_links
from s360bridge.core.connectors.http import AUTH_SCHEMA, Refused, send, session_for
from s360bridge.core.connectors.mapping import Mapping, lookup
from s360bridge.core.errors import (
    ConfigError,
    PluginError,
    S360BridgeError,
    ServerError,
    TargetUnavailable,
    Undeliverable,
)
from s360bridge.core.operations.admin import received
from s360bridge.core.operations.erasure import erase_versions
from s360bridge.core.operations.reconcile import Comparison, Field, Reconciliation, Side
from s360bridge.core.pipeline import leases
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.receiver import (
    RequestRefused,
    ServiceRequest,
    check_auth,
    json_response,
    service_request,
)
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.plugin.routes import ANY_STREAM
from s360bridge.core.plugin.services import Service
from s360bridge.core.plugin.streams import (
    ReceivedBatch,
    RecordValidator,
    StoredRecord,
    Stream,
    load_schema,
    schema_error,
    split_batch,
    stream_hooks,
)
from s360bridge.core.plugin.targets import PushResult, Target, target_hooks
from s360bridge.core.plugin.warehouse import WAREHOUSE, WarehouseRow, warehouse_table
from s360bridge.core.s360.client import (
    S360ApiError,
    S360AuthError,
    S360BusinessError,
    S360QuotaSpent,
    S360Unavailable,
    S360Uncertain,
)
from s360bridge.core.s360.contacts import CONTACT_SERVICE, SEARCH_RESULTS, best_match
from s360bridge.core.s360.times import parse_s360_time, utc_of, utc_or_none
from s360bridge.core.storage.copies import copy_insert, copy_new
from s360bridge.core.storage.db import make_engine, write
from s360bridge.core.storage.rawsql import driver, executemany, index_plans_only, run
from s360bridge.core.storage.tables import dialect_insert

# 2: routing by declaration; 3: per-item push outcomes; 4: leases, and services beside
# streams (the register_services hook, Service, service_request, ServiceRequest); 5: the
# register_gauges hook; 6: Stream.search_fields; 7: the register_operator_pages hook; 8: driver
API_VERSION = 8


def require(version: int, plugin: str = "this plugin") -> None:
    """Stop loading a plugin that needs a newer API than the installed one."""
    if API_VERSION < version:
        raise PluginError(f"{plugin} needs the s360bridge plugin API {version} or newer; the "
                          f"installed s360bridge {__version__} has API {API_VERSION}: upgrade "
                          "s360bridge")


__all__ = [
    # versions
    "API_VERSION", "require",
    # hooks, streams and records
    "hookimpl", "Stream", "StoredRecord", "ReceivedBatch", "RecordValidator", "load_schema",
    "schema_error", "split_batch", "stream_hooks", "Institution",
    # targets and routing
    "Target", "PushResult", "target_hooks", "ANY_STREAM", "Secret", "reveal",
    # the warehouse table spec
    "WAREHOUSE", "warehouse_table", "WarehouseRow",
    # errors
    "S360BridgeError", "ConfigError", "PluginError", "TargetUnavailable", "ServerError",
    "Undeliverable", "Refused", "S360ApiError", "S360AuthError", "S360BusinessError",
    "S360QuotaSpent", "S360Uncertain", "S360Unavailable",
    # reconcile
    "Comparison", "Field", "Reconciliation", "Side",
    # talking to S-360 and to other systems
    "CONTACT_SERVICE", "SEARCH_RESULTS", "best_match", "parse_s360_time", "utc_of",
    "utc_or_none", "AUTH_SCHEMA", "session_for", "send", "Mapping", "lookup", "crm_links",
    # routes and commands of a plugin
    "RequestRefused", "check_auth", "json_response", "ingest", "config_option",
    "institution_of", "open_bridge",
    # leases on the rows of a plugin's table
    "leases",
    # services beside streams
    "Service", "service_request", "ServiceRequest",
    # the engine database and SQL on the driver
    "dialect_insert", "make_engine", "write", "copy_insert", "copy_new", "driver", "executemany",
    "index_plans_only", "run", "erase_versions", "received",
]
