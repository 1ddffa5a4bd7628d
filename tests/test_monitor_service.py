"""The live service on a real uvicorn server on 127.0.0.1: auth, predict, metrics, bad
input, telemetry, blue/green and rollback."""

from __future__ import annotations

import http.client
import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from hardenml.monitor.telemetry import TelemetryStore, verify_telemetry
from hardenml.records import TRAFFIC_SWITCHED, TrafficSwitched
from monitor_support import (
    TOKEN,
    TOKEN_ENV,
    call,
    monitor_workspace,
    running,
    save_weights,
    second_mlp,
)

ROUTES = [
    ("POST", "/v1/predict"),
    ("POST", "/v1/ingest"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/status"),
    ("POST", "/v1/rollback"),
    ("POST", "/v1/switch"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/no-such-route"),
]


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path) -> Any:
    return monitor_workspace(tmp_path / "ws", digits_weights)


def test_every_route_but_healthz_answers_401_and_nothing_else_without_the_token(
    workspace: Any,
) -> None:
    with running(workspace) as served:
        for method, path in ROUTES:
            for token in (None, "wrong", TOKEN + "x", ""):
                answer = call(served.port, method, path, {}, token=token)
                assert (answer.status, answer.body) == (401, b""), (method, path, token)
            authorised = call(served.port, method, path, {"inputs": [0.0] * 64})
            assert authorised.status != 401, (method, path)
        health = call(served.port, "GET", "/healthz", token=None)
        assert health.status == 200 and health.json() == {"status": "ok"}


def test_predict_answers_single_and_batched_inputs_like_the_model(
    workspace: Any, digits: tuple[np.ndarray, ...], digits_mlp: nn.Module
) -> None:
    x_test = digits[2][:20]
    with torch.no_grad():
        expected = torch.softmax(digits_mlp(torch.from_numpy(x_test)), dim=1).numpy()
    with running(workspace) as served:
        version = served.service.versions()[0].version
        single = call(served.port, "POST", "/v1/predict", {"inputs": x_test[0].tolist()}).json()
        batch = call(served.port, "POST", "/v1/predict", {"inputs": x_test.tolist()}).json()
    assert single["class"] == str(int(expected[0].argmax()))
    assert single["model_version"] == version and version.startswith("digits-mlp@")
    np.testing.assert_allclose(single["scores"], expected[0], atol=1e-5)
    assert batch["labels"] == [str(int(i)) for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(batch["scores"], expected, atol=1e-5)
    np.testing.assert_allclose(batch["confidence"], expected.max(axis=1), atol=1e-5)


def test_an_answer_says_in_server_timing_how_long_the_model_took(
    workspace: Any, digits: tuple[np.ndarray, ...]
) -> None:
    x_test = digits[2][:16]
    with running(workspace) as served:
        began = time.perf_counter()
        answer = call(served.port, "POST", "/v1/predict", {"inputs": x_test.tolist()})
        round_trip_ms = (time.perf_counter() - began) * 1000.0
        refused = call(served.port, "POST", "/v1/predict", {"inputs": [[1.0, 2.0]]})
        model_ms = served.service.metrics.model_seconds
    assert answer.status == 200
    name, duration = answer.headers["server-timing"].split(";dur=")
    assert name == "model" and 0.0 < float(duration) < round_trip_ms
    observed = next(iter(model_ms.collect())).samples
    total_ms = 1000.0 * sum(s.value for s in observed if s.name.endswith("_sum"))
    assert float(duration) == pytest.approx(total_ms, abs=1e-3)  # the one model call
    assert refused.status == 422 and "server-timing" not in refused.headers


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def test_predict_takes_an_npy_array_like_json_and_refuses_what_json_would(
    workspace: Any, digits: tuple[np.ndarray, ...]
) -> None:
    x_test = digits[2][:12]
    npy = {"Content-Type": "application/x-npy"}
    with running(workspace) as served:
        as_json = call(served.port, "POST", "/v1/predict", {"inputs": x_test.tolist()}).json()
        answer = call(served.port, "POST", "/v1/predict", raw=_npy(x_test), headers=npy)
        single = call(served.port, "POST", "/v1/predict", raw=_npy(x_test[0]), headers=npy)
        pickled = call(
            served.port, "POST", "/v1/predict", raw=_npy(np.array([{}], object)), headers=npy
        )
        garbage = call(served.port, "POST", "/v1/predict", raw=b"not npy", headers=npy)
        shape = call(served.port, "POST", "/v1/predict", raw=_npy(x_test[:, :10]), headers=npy)
        nan = call(served.port, "POST", "/v1/predict", raw=_npy(x_test * np.nan), headers=npy)
        written = served.service.writer
    assert answer.status == 200 and answer.json()["labels"] == as_json["labels"]
    np.testing.assert_allclose(answer.json()["scores"], as_json["scores"], atol=1e-6)
    assert single.json()["class"] == as_json["labels"][0]
    assert pickled.status == 400 and "npy" in pickled.json()["error"]
    assert garbage.status == 400 and "npy" in garbage.json()["error"]
    assert shape.status == 422 and "shape" in shape.json()["error"]
    assert nan.status == 422 and "NaN" in nan.json()["error"]
    assert written.written_ == 12 + 12 + 1


def _metrics(port: int) -> dict[str, Any]:
    answer = call(port, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(answer.body.decode())}


def test_metrics_scrape_parses_and_counts_every_prediction(
    workspace: Any, digits: tuple[np.ndarray, ...]
) -> None:
    with running(workspace) as served:
        for size in (1, 7, 12):
            call(served.port, "POST", "/v1/predict", {"inputs": digits[2][:size].tolist()})
        call(served.port, "POST", "/v1/predict", raw=b"{broken")
        families = _metrics(served.port)
    predictions = sum(s.value for s in families["hardenml_predictions"].samples)
    assert predictions == 20
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["hardenml_requests"].samples
        if s.name == "hardenml_requests_total"
    }
    assert requests[("/v1/predict", "200")] == 3 and requests[("/v1/predict", "400")] == 1
    latency = families["hardenml_request_duration_seconds"]
    counts = [s for s in latency.samples if s.name.endswith("_count")]
    assert sum(s.value for s in counts if s.labels["route"] == "/v1/predict") == 4
    assert "hardenml_telemetry_backlog_records" in families
    shares = {
        s.labels["model_version"]: s.value for s in families["hardenml_traffic_share"].samples
    }
    assert list(shares.values()) == [1.0]


BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"rows": []}', 422, "no 'inputs'"),
    (b'{"inputs": [1, 2, 3]}', 422, "shape [3]"),
    (b'{"inputs": [[0.1, 0.2], [0.3]]}', 422, "ragged"),
    (b'{"inputs": ' + b'["a"]' + b"}", 422, "expected numbers"),
    (b'{"inputs": [' + b", ".join([b"NaN"] * 64) + b"]}", 422, "NaN"),
    (b'{"inputs": [' + b", ".join([b"0.5"] * 63 + [b"Infinity"]) + b"]}", 422, "Infinity"),
    (b'{"inputs": [' + b", ".join([b"7.0"] * 64) + b"]}", 422, "outside the model's input bounds"),
    (b'{"inputs": []}', 422, "empty"),
    (
        b'{"inputs": [' + b", ".join([b"[" + b", ".join([b"0"] * 64) + b"]"] * 40) + b"]}",
        413,
        "max_rows",
    ),
    (b'{"inputs": "' + b"x" * 70_000 + b'"}', 413, "max_body_bytes"),
]


def test_bad_input_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    ws = monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor="detectors = []\nmax_rows = 32\nmax_body_bytes = 65536\n",
    )
    with running(ws) as served:
        for body, status, words in BAD_BODIES:
            answer = call(served.port, "POST", "/v1/predict", raw=body)
            assert answer.status == status, (body[:40], answer.body)
            assert words in answer.json()["error"], answer.json()
        odd_id = call(
            served.port,
            "POST",
            "/v1/predict",
            {"inputs": digits[2][0].tolist()},
            headers={"X-Request-Id": "bad id with spaces"},
        )
        assert odd_id.status == 400 and "X-Request-Id" in odd_id.json()["error"]
        assert call(served.port, "POST", "/v1/switch", {"candidate_share": 2}).status == 422
        assert call(served.port, "POST", "/v1/switch", {"candidate_share": 0.5}).status == 409
        good = call(served.port, "POST", "/v1/predict", {"inputs": digits[2][:3].tolist()})
        assert good.status == 200 and len(good.json()["labels"]) == 3
    assert TelemetryStore(ws.config.ledger_path).count() == 3


def _burst(port: int, rows: np.ndarray, threads: int, requests: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(requests):
            batch = rows[(k + i) % len(rows) : (k + i) % len(rows) + 1 + i % 3]
            answer = call(
                port,
                "POST",
                "/v1/predict",
                {"inputs": batch.tolist()},
                connection=conn,
                headers={"X-Client-Id": f"client-{k}"},
            )
            with lock:
                statuses.append(answer.status)
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def test_telemetry_keeps_one_chained_record_per_prediction_after_a_burst(
    workspace: Any, digits: tuple[np.ndarray, ...]
) -> None:
    rows = digits[2][:50]
    with running(workspace) as served:
        statuses = _burst(served.port, rows, threads=8, requests=25)
    # Read after the shutdown: a request records its telemetry just after its answer.
    submitted = served.service.writer.submitted_
    assert statuses == [200] * 200
    store = TelemetryStore(workspace.config.ledger_path)
    records = store.records()
    # Each request sent 1 + i % 3 rows: every one of them is a record, written on shutdown.
    assert len(records) == submitted == sum(8 * (1 + i % 3) for i in range(25))
    assert {r["client_id"] for r in records} == {f"client-{k}" for k in range(8)}
    assert all(r["raw_input"] is None and len(r["input_sha256"]) == 64 for r in records)
    report = verify_telemetry(workspace.config.ledger_path)
    assert report.ok and report.records == len(records) and report.batches >= 1


def test_rollback_under_concurrent_load_fails_no_request(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    candidate = save_weights(second_mlp(digits[0], digits[1]), tmp_path / "candidate.safetensors")
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / candidate.name).write_bytes(candidate.read_bytes())
    ws = monitor_workspace(
        folder, digits_weights, monitor="detectors = []\ntraffic_split = 0.5\n", candidate=candidate
    )
    rows = digits[2][:40]
    with running(ws) as served:
        released, cand = [m.version for m in served.service.versions()]
        versions: list[tuple[float, str]] = []
        statuses: list[int] = []
        stop = threading.Event()
        lock = threading.Lock()

        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
            i = 0
            while not stop.is_set():
                answer = call(
                    served.port,
                    "POST",
                    "/v1/predict",
                    {"inputs": rows[(k + i) % 40].tolist()},
                    connection=conn,
                    headers={"X-Request-Id": f"r{k}-{i}"},
                )
                i += 1
                with lock:
                    statuses.append(answer.status)
                    if answer.status == 200:
                        versions.append((float(len(versions)), answer.json()["model_version"]))
            conn.close()

        workers = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for worker in workers:
            worker.start()
        while len(statuses) < 150:
            stop.wait(0.01)
        rolled = call(served.port, "POST", "/v1/rollback", {"reason": "candidate misbehaves"})
        after_rollback = len(statuses)
        while len(statuses) < after_rollback + 150:
            stop.wait(0.01)
        stop.set()
        for worker in workers:
            worker.join()
    assert rolled.status == 200 and set(statuses) == {200}
    before = {v for _, v in versions[:100]}
    assert before == {released, cand}
    # Requests that started after the switch answered went to the released model only
    # (those in flight during it may still come from the candidate).
    assert {v for _, v in versions[after_rollback + 12 :]} == {released}
    switched = [e for e in ws.ledger.events() if e.kind == TRAFFIC_SWITCHED]
    event = TrafficSwitched.from_payload(switched[-1].payload)
    assert event.rollback and event.after == {released: 1.0, cand: 0.0}
    assert event.before == {released: 0.5, cand: 0.5} and event.reason == "candidate misbehaves"


def test_the_split_is_deterministic_per_request_id(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    candidate = save_weights(second_mlp(digits[0], digits[1]), tmp_path / "cand.safetensors")
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / candidate.name).write_bytes(candidate.read_bytes())
    ws = monitor_workspace(
        folder, digits_weights, monitor="detectors = []\ntraffic_split = 0.3\n", candidate=candidate
    )
    row = {"inputs": digits[2][0].tolist()}
    with running(ws) as served:
        first = [
            call(served.port, "POST", "/v1/predict", row, headers={"X-Request-Id": f"q{i}"}).json()[
                "model_version"
            ]
            for i in range(60)
        ]
        again = [
            call(served.port, "POST", "/v1/predict", row, headers={"X-Request-Id": f"q{i}"}).json()[
                "model_version"
            ]
            for i in range(60)
        ]
        cand = served.service.versions()[1].version
    assert first == again
    assert 5 <= first.count(cand) <= 35


def test_ingest_records_what_another_service_posts(
    workspace: Any, digits: tuple[np.ndarray, ...]
) -> None:
    rows = digits[2][:5]
    scores = np.full((5, 10), 0.1)
    records = [
        {"input": r.tolist(), "scores": s.tolist(), "client_id": "shop", "model_version": "v7"}
        for r, s in zip(rows, scores, strict=True)
    ]
    with running(workspace, ingest_only=True) as served:
        assert call(served.port, "POST", "/v1/predict", {"inputs": rows[0].tolist()}).status == 404
        answer = call(served.port, "POST", "/v1/ingest", {"records": records})
        bad = call(served.port, "POST", "/v1/ingest", {"records": [{**records[0], "scores": [1]}]})
    assert answer.status == 200 and answer.json() == {"ingested": 5}
    assert bad.status == 422 and "records[0].scores" in bad.json()["error"]
    stored = TelemetryStore(workspace.config.ledger_path).records()
    assert [(r["client_id"], r["model_version"], r["source"]) for r in stored] == [
        ("shop", "v7", "ingest")
    ] * 5
