"""An MLflow client that carries a study's records through a tracking server's restart.

MLflow's own client retries a request the server refuses or answers with 5xx. It gives up on one
whose connection breaks after the request went out, for instance when the server dies while it
answers. That breaks the study that made the call, although the server is back seconds later.
`ReconnectingClient` repeats such calls. It does so only for calls whose repetition records
nothing twice: a repeated metric batch is the same rows, which a database-backed server keeps
once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

RECONNECT_ATTEMPTS = 5  # tries of a call whose connection broke, each after MLflow's own retries
RECONNECT_BACKOFF_S = 1.0  # the wait before the second try; it doubles before each further one

Method = TypeVar("Method", bound=Callable[..., Any])


def lost_connection(error: MlflowException) -> bool:
    """Whether an MLflow call failed because its connection to the server broke or timed out,
    not because the server turned the request down."""
    cause = error.__cause__ or error.__context__
    return isinstance(cause, requests.RequestException)


def _reconnecting(method: Method) -> Method:
    """`method`, repeated with a doubling wait while its connection to the server breaks."""

    @functools.wraps(method)
    def call(self: MlflowClient, *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except MlflowException as error:
                attempt += 1
                if attempt == RECONNECT_ATTEMPTS or not lost_connection(error):
                    raise
            time.sleep(RECONNECT_BACKOFF_S * 2 ** (attempt - 1))

    return call  # type: ignore[return-value]


class ReconnectingClient(MlflowClient):
    """MlflowClient whose calls that can be repeated safely (reads, metric and tag batches, tags,
    run states, artifacts) are repeated when the connection to the tracking server breaks
    mid-request. Creating runs and experiments is not repeated: a repeat could create two."""

    log_batch = _reconnecting(MlflowClient.log_batch)
    set_tag = _reconnecting(MlflowClient.set_tag)
    set_terminated = _reconnecting(MlflowClient.set_terminated)
    update_run = _reconnecting(MlflowClient.update_run)
    log_artifact = _reconnecting(MlflowClient.log_artifact)
    log_artifacts = _reconnecting(MlflowClient.log_artifacts)
    log_dict = _reconnecting(MlflowClient.log_dict)
    get_run = _reconnecting(MlflowClient.get_run)
    get_metric_history = _reconnecting(MlflowClient.get_metric_history)
    search_runs = _reconnecting(MlflowClient.search_runs)
