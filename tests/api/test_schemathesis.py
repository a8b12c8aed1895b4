"""Property-based run over the OpenAPI document: valid and invalid requests alike never
get a 5xx, and every response matches the documented schema (status, media type, body).

Bounded (a few examples per operation and mode) so the run stays well under a minute.
The operations are driven from one test rather than schemathesis' pytest plugin, whose
lazy loader does not run under pytest 9."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.config import ApiConfig
from search.settings import Settings
from tests.api.conftest import API_KEY, build_home
from tests.utils.corpus import catalog_items
from tests.utils.generators import tiny_generator_weights

MAX_EXAMPLES = 25
# Not positive_data_acceptance: the schema cannot state every rule (at least one query
# input; offset + k <= 10000; a filter's operator names), so a schema-valid request may
# rightly get a 4xx. Everything else: no 5xx, and every response as documented.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, tiny_model):
    # a home of its own: generated requests create, fill and drop collections at random
    settings = Settings(home=tmp_path_factory.mktemp("fuzz"), model=tiny_model, device="cpu",
                        offline=True, api_key=API_KEY)
    build_home(settings, "shop", catalog_items(12))
    weights = tiny_generator_weights(settings.home / "gen.safetensors", tiny_model)
    app = create_app(settings, ApiConfig(reload_interval_s=5, request_timeout_s=20,
                                         generator_model=str(weights),
                                         generate_per_minute=1e6))
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    loaded.config.generation.update(allow_x00=True)
    yield loaded
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # schemathesis started this app's lifespan; stop it


def _check(operation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        # a valid key, so write endpoints get past auth and their bodies are exercised
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    checked = 0
    for operation in operations:
        try:
            _check(operation, mode)
            checked += 1
        except Unsatisfiable:
            # nothing to make invalid (no parameters, no body): only in negative mode
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert checked >= 10
