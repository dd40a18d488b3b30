"""Schema-based fuzzing of the endpoint's API (schemathesis, from its own OpenAPI spec), without Ray.

Valid requests (positive mode) and requests that break the schema (negative mode) alike must get a
documented status with a body that matches its schema, and never a 5xx. The number of cases is
bounded so the suite stays quick.
"""

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from mtl.inference.predictor import Predictor
from mtl.serving.api import create_api
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import ServiceSettings

CASES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir):
    service = ServiceSettings(model=str(tiny_model_dir), max_texts=8, max_chars=300, max_body_bytes=20_000,
                              max_batch_texts=8, cache_size=16)
    predictor = Predictor.from_folder(tiny_model_dir, device="cpu", max_chars=service.max_chars)
    app = create_api(single_model(PredictorBackend(predictor), model_info(str(tiny_model_dir))), service)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_request_gets_a_server_error_or_an_undocumented_answer(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/v1/embed", "/v1/predict", "/v1/model", "/healthz"}
    # a GET with no parameters has nothing to break: negative cases go to the POST bodies
    runs = [(operation, mode) for operation, mode in itertools.product(operations, GenerationMode)
            if mode == GenerationMode.POSITIVE or operation.method.upper() == "POST"]
    for operation, mode in runs:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def fuzz(case):
            response = case.call_and_validate()
            assert response.status_code < 500

        fuzz()
