"""The resellers' OpenAPI document fuzzed with schemathesis against the bridge and the
simulator (the ``fuzz`` extra, in a venv of its own: schemathesis pins jsonschema-rs below the
version the project installs; .ci/run makes it). Every answer is in the document, and none is
a 500: a 500 is a bug. Examples are capped per operation and derandomized (CI runs the same
ones each time), and so is the time per example."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from s360bridge.core.config import Auth  # noqa: E402
from s360bridge.plugins.offers import catalog as cache  # noqa: E402
from s360bridge.plugins.offers import openapi  # noqa: E402

from ..helpers.shop import RESELLER_KEYS  # noqa: E402

BASE = "/resellers/v1/testvenue"
schema = schemathesis.openapi.from_dict(openapi.document(BASE, Auth("api_key",
                                                                    header="x-api-key")))


def not_a_500(ctx, response, case):
    """A 500 is a bug; a 503 (S-360 or the cache not ready, with Retry-After) is not."""
    assert response.status_code != 500, f"500 from {case.method} {case.path}: " \
                                        f"{response.text[:300]}"


CHECKS = [not_a_500, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@schema.parametrize()
@settings(max_examples=15, deadline=15000, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_500(case, shop):
    cache.refresh_availability(shop.bridge, shop.inst, 3600)  # warm, as the scheduler makes it
    case.call_and_validate(base_url=shop.proc.url + BASE, checks=CHECKS,
                           headers={"x-api-key": RESELLER_KEYS["eventim"]}, timeout=30)
