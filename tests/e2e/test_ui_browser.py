"""`gmp ui` over a small finished study, looked at in a real (headless) Chromium: what a user
sees in the MLflow UI and in the Optuna dashboard. Screenshots go to the test's tmp folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.driver import StudyLocations, run_study
from orchestrator.spec import load_spec
from storage.runs import ROLE_TAG
from tests.cluster.conftest import REQUIRE_SERVERS_ENV, free_port
from tests.conftest import records_root
from tests.e2e.conftest import FAST, SMALL_STUDY, study_file

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
START_TIMEOUT_S = 240


def _browser_or_skip() -> None:
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not Path(CHROMIUM).is_file():
        missing.append("chromium")
    if missing:
        if os.environ.get(REQUIRE_SERVERS_ENV):
            pytest.fail(f"{' and '.join(missing)} missing ({REQUIRE_SERVERS_ENV} is set)")
        pytest.skip(f"{' and '.join(missing)} missing")


def _wait_for(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in time")


@pytest.fixture
def served_study(tmp_path: Path, mlflow_store_template: Path) -> Iterator[dict[str, str]]:
    """A finished two-trial study (Gaussian and GMP), served by `gmp ui` on free ports."""
    _browser_or_skip()
    root = records_root(tmp_path, mlflow_store_template)
    file = study_file(
        tmp_path,
        name="e2e-ui",
        fixed={**SMALL_STUDY["fixed"], "prior": {"init_std": 3.0}},
        search_space={
            "prior.k_max": {"type": "categorical", "choices": [1, 3]},
            "optim.lr_network": FAST["search_space"]["optim.lr_network"],
        },
        search={"first_trials": [{"prior.k_max": 1}, {"prior.k_max": 3}]},
        budget={"trials": 2, "iterations": 20, "eval_interval": 10},
    )
    spec = load_spec(file)
    run_study(spec, file.read_text(), root=root, num_cpus=2, verbose=0)
    mlflow_port, dashboard_port = free_port(), free_port()
    command = [sys.executable, "-m", "orchestrator.cli", "ui", "--root", str(root)]
    command += ["--port", str(mlflow_port), "--dashboard-port", str(dashboard_port)]
    log_file = tmp_path / "ui.log"
    log = log_file.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        link = None
        while link is None and time.monotonic() < deadline and server.poll() is None:
            printed = log_file.read_text().splitlines()
            link = next((s.split()[-1] for s in printed if s.strip().startswith("e2e-ui ")), None)
            time.sleep(0.5)
        assert link is not None, log_file.read_text()
        _wait_for(f"http://127.0.0.1:{dashboard_port}/api/studies", deadline)
        _wait_for(f"http://127.0.0.1:{mlflow_port}/health", deadline)
        client = MlflowClient(StudyLocations.resolve(spec, root).mlflow_uri)
        experiment = client.get_experiment_by_name("e2e-ui")
        parent = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'study'"
        )[0]
        yield {
            "link": link,
            "parent": f"http://127.0.0.1:{mlflow_port}/#/experiments/"
            f"{experiment.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning",
            "dashboard": f"http://127.0.0.1:{dashboard_port}/dashboard",
            "shots": str(tmp_path),
        }
    finally:
        server.send_signal(signal.SIGTERM)  # `gmp ui` stops both servers and their workers
        server.wait(timeout=60)
        log.close()


def test_a_user_sees_the_study_in_the_mlflow_ui_and_the_optuna_dashboard(served_study):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(served_study["shots"])
    expect.set_options(timeout=90_000)  # a loaded machine: the UI's pages load slowly
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)

        # The link `gmp ui` prints opens the study on its runs (not on MLflow's GenAI pages);
        # the parent run holds a run per trial, named by its prior family.
        page.goto(served_study["link"])
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()
        expect(page.get_by_text("Model training").first).to_be_visible()
        page.locator('.ag-row button[data-component-id*="runnamecellrenderer"]').first.click()
        expect(page.get_by_text("Gaussian (learned) · lr_network")).to_be_visible()
        expect(page.get_by_text("GMP K=3 · lr_network")).to_be_visible()
        page.screenshot(path=shots / "mlflow_runs.png")

        # The parent run's description is the study's answer: the best trial first.
        page.goto(served_study["parent"])
        best = page.get_by_text("Best trial:").first
        expect(best).to_be_visible()
        best.scroll_into_view_if_needed()
        expect(page.get_by_text("ELBO").first).to_be_visible()
        page.screenshot(path=shots / "mlflow_parent.png")

        # The Optuna dashboard lists the study; its trials page shows both trials, complete.
        page.goto(served_study["dashboard"])
        expect(page.get_by_text("e2e-ui").first).to_be_visible()
        page.screenshot(path=shots / "dashboard_studies.png")
        page.get_by_text("e2e-ui").first.click()
        expect(page.get_by_text("elbo").first).to_be_attached()  # the objective by name
        page.goto(page.url.rstrip("/") + "/trials")
        expect(page.get_by_text("2 Trials")).to_be_visible()
        expect(page.get_by_text("Best Trial").first).to_be_visible()
        assert page.get_by_text("Complete", exact=True).count() >= 2
        page.screenshot(path=shots / "dashboard_trials.png")
        browser.close()
