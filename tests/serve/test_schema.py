"""Property-based run over the OpenAPI spec (schemathesis, bounded examples): no 5xx, responses match the spec."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed: the API fuzz run is skipped")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from omnirec.bundle import Bundle  # noqa: E402
from omnirec.models import Markov  # noqa: E402
from omnirec.serve.app import ServeConfig, create_app  # noqa: E402

KEY = "schema-key"


@pytest.fixture(scope="module")
def api_schema(tiny_dataset, tiny_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(folder / "bundle")
    app = create_app(ServeConfig(bundle=str(folder / "bundle"), store=str(folder / "events.db"), api_key=KEY))
    with TestClient(app):  # runs the lifespan: the service is loaded for the calls below
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_schema(api_schema):
    """Every operation, up to 30 generated requests each (with the API key): no 5xx, status codes, content
    types and bodies as the spec says."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers={"X-API-Key": KEY})

        check()
