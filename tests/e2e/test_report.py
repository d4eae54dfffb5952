"""`gmp report` on the quick-start study (at a CI-sized budget): numbers equal the MLflow records,
files self-contained."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.driver import StudyLocations
from orchestrator.spec import load_spec
from storage.layout import StudyPaths
from storage.runs import ROLE_TAG
from tests.conftest import records_root

pytestmark = pytest.mark.slow

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
# The quick-start study as shipped, but small enough for CI: its search space, target, sampler
# and scheduler stay; trials (one per prior family), iterations, batch, steps and network shrink.
CI_SIZE = {
    "budget": {"trials": 3, "iterations": 30, "eval_interval": 10},
    "batch_size": 64,
    "eval_samples": 256,
    "time": {"n_steps": 8},
    "network": {"hidden": 16, "n_time_features": 8},
    "imr": {"interval": 10, "mala": {"n_chains": 8, "n_steps": 20}},
}


def _quickstart_at_ci_size(folder: Path) -> Path:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["budget"] = CI_SIZE["budget"]
    data["search"]["first_trials"] = data["search"]["first_trials"][: CI_SIZE["budget"]["trials"]]
    fixed = data["fixed"]
    for key in ("batch_size", "eval_samples"):
        fixed[key] = CI_SIZE[key]
    for key in ("time", "network", "imr"):
        fixed[key] = {**fixed.get(key, {}), **CI_SIZE[key]}
    fixed["imr"]["mala"] = {**data["fixed"]["imr"].get("mala", {}), **CI_SIZE["imr"]["mala"]}
    path = folder / "quickstart.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _final(client: MlflowClient, run_id: str, metric: str) -> float:
    values = [
        m.value for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
    ]
    return float(np.mean(values[-5:]))


def test_report_of_the_quickstart_matches_mlflow_and_is_logged_on_the_parent(
    tmp_path: Path, mlflow_store_template: Path
):
    root = records_root(tmp_path, mlflow_store_template)
    file = _quickstart_at_ci_size(tmp_path)
    spec = load_spec(file)
    assert main(["study", "run", str(file), "--root", str(root)]) == 0
    out = tmp_path / "report"
    assert main(["report", spec.name, "--root", str(root), "--out", str(out)]) == 0

    client = MlflowClient(StudyLocations.resolve(spec, root).mlflow_uri)
    experiment = client.get_experiment_by_name(spec.name)
    trials = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'"
    )
    by_family: dict[str, list[float]] = {}
    for run in trials:
        k = int(run.data.params["prior.k_max"])
        imr = run.data.params["imr.enabled"] == "True"
        family = "Gaussian (learned)" if k == 1 else ("GMP+IMR" if imr else "GMP")
        by_family.setdefault(family, []).append(_final(client, run.info.run_id, "elbo"))

    markdown = (out / "report.md").read_text()
    rows = re.findall(
        r"^\| (Gaussian \(learned\)|GMP\+IMR|GMP) \| \d+ \| (\d+) \| (\S+)", markdown, re.M
    )
    assert {family for family, _, _ in rows} == set(by_family)
    for family, count, elbo in rows:
        assert int(count) == len(by_family[family])
        assert float(elbo) == pytest.approx(np.mean(by_family[family]), abs=1e-3)

    html = (out / "report.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(name.endswith("_samples.png") for name in pngs)
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "src='http" not in html and 'src="http' not in html

    parent = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'study'"
    )[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html"} <= logged


def test_report_on_an_unknown_study_is_bad_input(tmp_path: Path, capsys):
    assert main(["report", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert f"no gmp records in {tmp_path.resolve()}/" in capsys.readouterr().err
    MlflowClient(StudyPaths(tmp_path).mlflow_uri).search_experiments()  # an empty store
    assert main(["report", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
