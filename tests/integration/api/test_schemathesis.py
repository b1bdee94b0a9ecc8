"""Property-based requests from the OpenAPI spec (schemathesis): whatever a client sends,
the API answers with a 2xx/4xx, never a server error (issue 4 "Done means" 7).

Driven through schemathesis's Python API (one Hypothesis run per operation) rather than
its pytest plugin, which does not load under pytest 9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import schemathesis
from hypothesis import HealthCheck, given, settings

from saestudio.api.app import create_app
from saestudio.settings import Settings

CHANGED = {
    ("POST", "/api/v1/trainings"),
    ("POST", "/api/v1/trainings/validate"),
    ("POST", "/api/v1/trainings/{training_id}/retry"),
    ("POST", "/api/v1/activation-datasets"),
    ("POST", "/api/v1/templates"),
    ("PATCH", "/api/v1/templates/{template_id}"),
    ("POST", "/api/v1/templates/import"),
}
"""Routes that take a path or a name (the path policy) or build per-SAE jobs: more
examples each."""


def test_no_server_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "acts.npy", np.zeros((64, 8), np.float32))  # a real source to plan on
    app = create_app(Settings(data_dir=data, api_token=None))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        op = result.ok()
        examples = 60 if (op.method.upper(), op.path) in CHANGED else 8

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} → {response.status_code}: "
                f"{response.text[:300]}"
            )

        check()
        checked.append(f"{op.method.upper()} {op.path}")
    assert len(checked) >= 20, checked  # every route was exercised
    assert {(m, p) for m, p in (c.split(" ", 1) for c in checked)} >= CHANGED


def test_training_configs_near_valid_never_5xx(tmp_path: Path) -> None:
    """Random schema-valid bodies seldom get past field validation; these do, so the
    per-job checks (sweeps, hooks, widths, the path policy) meet odd values too."""
    from fastapi.testclient import TestClient
    from hypothesis import strategies as st

    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "acts.npy", np.zeros((64, 8), np.float32))
    (data / "t.txt").write_text("text\n" * 20)
    odd = st.sampled_from(["acts.npy", "../acts.npy", "%2e%2e/x", "/etc", "x" * 300, "~nobody/x"])
    values = st.lists(
        st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=3,
    )
    body = st.fixed_dictionaries(
        {
            "config": st.fixed_dictionaries(
                {
                    "activations": odd,
                    "hook": st.lists(st.sampled_from(["resid_post.1", "nope", "x.9"]), max_size=3),
                    "sae": st.fixed_dictionaries(
                        {
                            "architecture": st.sampled_from(["topk", "batchtopk", "standard"]),
                            "k": st.integers(1, 10**6),
                            "expansion_factor": st.integers(1, 1024),
                        }
                    ),
                    "sweep": st.dictionaries(
                        st.sampled_from(["k", "d_sae", "lr", "expansion_factor", "l0_target"]),
                        values,
                        max_size=2,
                    ),
                    "steps": st.integers(1, 10**9),
                    "batch_size": st.integers(1, 10**6),
                }
            )
        }
    )
    with TestClient(create_app(Settings(data_dir=data, api_token=None))) as client:

        @given(b=body)
        @settings(max_examples=150, deadline=None, database=None)
        def check(b: dict) -> None:
            for route in ("/api/v1/trainings/validate", "/api/v1/trainings"):
                r = client.post(route, json=b)
                assert r.status_code in (200, 201, 400, 404, 422), (route, b, r.text[:300])

        check()
