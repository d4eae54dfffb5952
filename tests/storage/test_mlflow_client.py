"""A tracking server whose connection breaks mid-answer: the study's client repeats the call, and
a request the server turns down is not repeated.

The server is a small HTTP server on 127.0.0.1 that speaks just enough of MLflow's REST API
for `log_batch`; the clients under test are MLflow's own REST client and ours over real
sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from storage import mlflow_client
from storage.mlflow_client import ReconnectingClient

METRICS = [Metric("elbo", -1.5, 1_000, 10)]


class FlakyTracking(ThreadingHTTPServer):
    """Answers each log-batch POST by the next entry of `answers`, then by success: "break"
    sends the headers of a chunked answer and half a chunk, then closes the connection;
    "refuse" answers 400 with MLflow's error body. `bodies` keeps every request body."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = answers
        self.bodies: list[dict] = []

    @property
    def uri(self) -> str:
        """The tracking URI."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FlakyTracking

    def do_POST(self) -> None:
        """Answer one request as the next entry of the server's `answers` says."""
        length = int(self.headers["Content-Length"])
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        answer = self.server.answers.pop(0) if self.server.answers else "ok"
        if answer == "break":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"2\r\n{")
            self.wfile.flush()
            self.close_connection = True
            return
        status, body = (
            (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric"})
            if answer == "refuse"
            else (200, {})
        )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def tracking(request: pytest.FixtureRequest) -> Iterator[FlakyTracking]:
    """A running FlakyTracking with the test's answers."""
    server = FlakyTracking(list(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tries a hundred times sooner than a study does."""
    monkeypatch.setattr(mlflow_client, "RECONNECT_BACKOFF_S", 0.01)


@pytest.mark.parametrize("tracking", [["break"]], indirect=True)
def test_mlflows_own_client_gives_up_when_the_answer_breaks_off(tracking: FlakyTracking):
    with pytest.raises(MlflowException, match="Connection broken") as caught:
        MlflowClient(tracking.uri).log_batch("run-1", metrics=METRICS)
    assert mlflow_client.lost_connection(caught.value)
    assert len(tracking.bodies) == 1


@pytest.mark.parametrize("tracking", [["break", "break"]], indirect=True)
def test_a_broken_answer_is_asked_again_with_the_same_batch(tracking: FlakyTracking):
    ReconnectingClient(tracking.uri).log_batch("run-1", metrics=METRICS)
    assert len(tracking.bodies) == 3
    assert tracking.bodies[0] == tracking.bodies[1] == tracking.bodies[2]
    assert tracking.bodies[0]["metrics"] == [
        {"key": "elbo", "value": -1.5, "timestamp": 1_000, "step": 10}
    ]


@pytest.mark.parametrize("tracking", [["break"] * 5], indirect=True)
def test_it_gives_up_after_its_attempts(tracking: FlakyTracking):
    with pytest.raises(MlflowException, match="Connection broken"):
        ReconnectingClient(tracking.uri).log_batch("run-1", metrics=METRICS)
    assert len(tracking.bodies) == mlflow_client.RECONNECT_ATTEMPTS


@pytest.mark.parametrize("tracking", [["refuse"]], indirect=True)
def test_a_request_the_server_turns_down_is_not_repeated(tracking: FlakyTracking):
    with pytest.raises(MlflowException, match="bad metric") as caught:
        ReconnectingClient(tracking.uri).log_batch("run-1", metrics=METRICS)
    assert not mlflow_client.lost_connection(caught.value)
    assert len(tracking.bodies) == 1
