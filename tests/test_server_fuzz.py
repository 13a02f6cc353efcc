"""Property-based fuzzing of the service from its own OpenAPI schema (schemathesis): whatever a
client sends, valid or not, the answer is never a server error.

Bounded: a few dozen generated requests per operation, valid and invalid, with the API key
sent so the write endpoints are exercised too, on a private library.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from conftest import TinyModel
from pixsift.server import ServerSettings
from sample_photos import write_photos
from serving import API_KEY, indexed_library, running_server

EXAMPLES_PER_OPERATION = 25  # for each of valid and invalid requests
TIME_LIMIT_S = 240  # the whole run; operations left after it are reported, not silently dropped


def test_no_request_gets_a_server_error(tmp_path: Path, tiny_model: TinyModel) -> None:
    photos = tmp_path / "Photos"
    write_photos(photos, 6, size=(320, 240), seed=40)
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    server_errors: list[str] = []
    statuses: Counter[int] = Counter()
    tried: list[str] = []
    started = time.monotonic()
    with running_server(library, ServerSettings(api_key=API_KEY, max_upload_bytes=256 * 1024)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results) >= 11  # the schema is valid OpenAPI throughout
        for operation in operations:
            assert time.monotonic() - started < TIME_LIMIT_S, f"time limit reached; done: {tried}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, server_errors, statuses)
            tried.append(operation.label)
    library.close()
    assert not server_errors, "\n".join(server_errors[:5])
    # the fuzz reached the handlers: requests were both served and refused
    assert statuses[200] > 50 and sum(n for status, n in statuses.items() if 400 <= status < 500) > 50, (
        statuses
    )


def _fuzz(operation: Any, mode: GenerationMode, server_errors: list[str], statuses: Counter[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # nothing left behind in the working tree
    )
    def check(case: Any) -> None:
        response = case.call(headers={"X-API-Key": API_KEY}, timeout=60)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{case.method} {case.formatted_path} {mode}: {response.text[:300]}")

    try:
        check()
    except Unsatisfiable:  # an operation without inputs (GET /healthz) has no invalid form
        assert mode is GenerationMode.NEGATIVE
