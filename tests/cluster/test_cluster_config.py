"""cluster.yaml: valid for Ray's cluster launcher, installs gmp, opens nothing to the public."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from orchestrator.driver import MLFLOW_URI_ENV, OPTUNA_URL_ENV
from storage.optuna_storage import redact

CLUSTER_FILE = Path(__file__).resolve().parents[2] / "cluster.yaml"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
PROJECT_MOUNT = "~/gmp"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """cluster.yaml as loaded by the launcher (YAML)."""
    return yaml.safe_load(CLUSTER_FILE.read_text())


def schema_errors(config: dict[str, Any]) -> list[str]:
    """Every violation of Ray's own cluster-config schema, as 'path: message'."""
    schema = json.loads(RAY_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)
    ]


def commands(config: dict[str, Any], role: str) -> list[str]:
    """The commands the launcher runs on a node of `role` ('head' or 'worker'), in order."""
    return [
        *config.get("initialization_commands", []),
        *config.get("setup_commands", []),
        *config.get(f"{role}_setup_commands", []),
        *config.get(f"{role}_start_ray_commands", []),
    ]


def test_cluster_file_satisfies_rays_schema(config):
    assert schema_errors(config) == []


def test_schema_check_catches_a_misspelled_key_and_a_wrong_type(config):
    broken = copy.deepcopy(config)
    broken["setup_command"] = broken.pop("setup_commands")
    broken["max_workers"] = "four"
    errors = schema_errors(broken)
    assert any("'setup_command' was unexpected" in e for e in errors), errors
    assert any(e.startswith("max_workers:") for e in errors), errors


def test_node_types_are_a_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not re.match(r"[gp]\d", head["node_config"]["InstanceType"])
    assert head["resources"] == {"CPU": 0}  # trials and tasks go to the workers
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    worker = workers[0]
    assert re.match(r"[gp]\d", worker["node_config"]["InstanceType"])  # a GPU instance
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]


@pytest.mark.parametrize("role", ["head", "worker"])
def test_every_node_installs_torch_then_this_package(config, role):
    assert config["file_mounts"][PROJECT_MOUNT] == "."  # the project, as `ray up` sees it
    pip = [c for c in commands(config, role) if c.startswith("pip install")]
    torch = next(i for i, c in enumerate(pip) if c.startswith("pip install torch=="))
    package = next(i for i, c in enumerate(pip) if f"-e {PROJECT_MOUNT}" in c)
    assert torch < package
    assert {".venv", "gmp-runs"} <= set(config["rsync_exclude"])


@pytest.mark.parametrize("role", ["head", "worker"])
def test_every_command_is_valid_bash(config, role):
    for command in commands(config, role):
        checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert checked.returncode == 0, (command, checked.stderr)


def test_no_port_is_public_and_services_bind_loopback(config):
    text = CLUSTER_FILE.read_text()
    assert "0.0.0.0" not in text and "::/0" not in text
    assert "IpPermissions" not in json.dumps(config["provider"])
    head = " ".join(commands(config, "head"))
    (ray_start,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in ray_start
    (mlflow,) = [c for c in commands(config, "head") if "mlflow server" in c]
    assert "--host 127.0.0.1" in mlflow and "--serve-artifacts" in mlflow
    assert "listen_addresses = '127.0.0.1'" in head


def test_head_starts_ray_with_the_storage_urls_and_every_node_with_a_token(config):
    (ray_start,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert ray_start.startswith("source ~/gmp.env && ")
    (env_file,) = [c for c in config["head_setup_commands"] if "> ~/gmp.env" in c]
    assert f"export {OPTUNA_URL_ENV}='postgresql+psycopg://" in env_file
    assert f"export {MLFLOW_URI_ENV}='http://127.0.0.1:5000'" in env_file
    starts = [c for c in commands(config, "head") + commands(config, "worker") if "ray start" in c]
    assert len(starts) == 2 and all("export RAY_AUTH_MODE=token" in c for c in starts)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_no_password_in_the_cluster_file():
    text = CLUSTER_FILE.read_text()
    assert redact(text) == text
