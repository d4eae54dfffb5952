"""The study file (YAML) as pydantic models, validated completely before anything runs."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import targets
from trainers.config import SamplerName, TargetSpec, TrainerConfig
from trainers.metrics import CATALOGUE, METRIC_NAMES, metrics_for

METRICS = METRIC_NAMES
"""Evaluation metrics a study can optimise (the catalogue in trainers.metrics)."""

Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(_Strict):
    """A float range, optionally log-uniform or stepped."""

    type: Literal["float"] = Field(description="a float range")
    low: float = Field(description="smallest value")
    high: float = Field(description="largest value (> low)")
    log: bool = Field(False, description="sample log-uniformly (needs low > 0)")
    step: float | None = Field(
        None, gt=0, description="values low, low + step, ...; none: any value (not with log)"
    )

    @model_validator(mode="after")
    def _non_empty(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    def values_to_check(self) -> list[Scalar]:
        """Values that must each give a valid trainer configuration."""
        return [self.low, self.high]


class IntParam(_Strict):
    """An integer range, optionally log-uniform or stepped."""

    type: Literal["int"] = Field(description="an integer range")
    low: int = Field(description="smallest value")
    high: int = Field(description="largest value (> low)")
    log: bool = Field(False, description="sample log-uniformly (needs low > 0, step 1)")
    step: int = Field(1, ge=1, description="values low, low + step, ...")

    @model_validator(mode="after")
    def _non_empty(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
        return self

    def values_to_check(self) -> list[Scalar]:
        """Values that must each give a valid trainer configuration."""
        return [self.low, self.high]


class CategoricalParam(_Strict):
    """A choice among listed values."""

    type: Literal["categorical"] = Field(description="a choice among listed values")
    choices: list[Scalar] = Field(
        min_length=1, description="the values (booleans, numbers or strings)"
    )

    def values_to_check(self) -> list[Scalar]:
        """Values that must each give a valid trainer configuration."""
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_point(point: dict[str, Scalar], space: dict[str, Param], where: str) -> None:
    """Each value of a listed trial is a key of the search space and lies in its range."""
    for key, value in point.items():
        param = space.get(key)
        if param is None:
            raise ValueError(f"{where}: {key!r} is not in the search space")
        if isinstance(param, CategoricalParam):
            inside = value in param.choices
        else:
            inside = not isinstance(value, (bool, str)) and param.low <= value <= param.high
        if not inside:
            raise ValueError(f"{where}: {key}={value!r} is outside the search space")


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"empty range: low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")


class Objective(_Strict):
    """One metric to optimise and its direction."""

    metric: Literal[METRICS] = Field(  # type: ignore[valid-type]
        description="an evaluation metric (docs/metrics.md); delta_log_z, sinkhorn and emc need "
        "a target with known log Z, samples and modes"
    )
    direction: Literal["maximize", "minimize"] = Field(
        description="maximize (elbo, log_z, ess, emc) or minimize (delta_log_z, sinkhorn)"
    )


class Budget(_Strict):
    """How many trials, how long each trains, how often it is evaluated."""

    trials: int = Field(ge=1, description="trials of the study (over every run of it)")
    iterations: int = Field(ge=1, description="training iterations per trial")
    eval_interval: int = Field(ge=1, description="iterations between evaluations")
    time_limit_s: float | None = Field(None, gt=0, description="wall-clock limit of the study")

    @model_validator(mode="after")
    def _interval_fits(self) -> Budget:
        if self.eval_interval > self.iterations:
            raise ValueError(
                f"eval_interval ({self.eval_interval}) must be <= iterations ({self.iterations})"
            )
        return self

    @property
    def evaluations(self) -> int:
        """Number of evaluations (Tune iterations) per trial."""
        return -(-self.iterations // self.eval_interval)


class Search(_Strict):
    """The Optuna sampler proposing trials."""

    algorithm: Literal["tpe", "cmaes", "random", "grid"] = Field(
        "tpe", description="Optuna's sampler; grid needs categorical parameters only"
    )
    seed: int = Field(0, description="seed of the Optuna sampler")
    first_trials: list[dict[str, Scalar]] = Field(
        default_factory=list,
        description="search-space values of the study's first trials, in order (e.g. one per "
        "prior family); Optuna draws the values a trial leaves out",
    )


class Scheduler(_Strict):
    """Tune's early-stopping scheduler; periods are counted in evaluations."""

    type: Literal["asha", "hyperband", "median", "none"] = Field(
        "none", description="ASHA, HyperBand, median stopping, or no early stopping"
    )
    grace_period: int = Field(
        1, ge=1, description="evaluations a trial runs before it may be stopped (asha, median)"
    )
    reduction_factor: float = Field(
        2.0, gt=1, description="share of trials kept at each rung is 1 / this (asha, hyperband)"
    )


class Resources(_Strict):
    """What one trial holds: CPUs and (fractional) GPUs, plus one CPU per parallel IMR task."""

    cpus: float = Field(
        1.0, gt=0, description="CPUs of a trial (also its training threads, one per whole CPU)"
    )
    gpus: float = Field(0.0, ge=0, description="GPUs of a trial; a fraction shares one GPU")
    imr_task_cpus: float = Field(1.0, gt=0, description="CPUs of one IMR candidate-search task")
    imr_parallel_tasks: int = Field(1, ge=0, description="IMR task bundles reserved per trial")


class Storage(_Strict):
    """Where the study is recorded; empty URLs mean files under `root`."""

    root: Path = Field(
        Path("gmp-runs"), description="folder of the local records (Optuna, MLflow, Tune)"
    )
    optuna_url: str | None = Field(
        None,
        description="Optuna storage URL (e.g. postgresql+psycopg://...); none: $GMP_OPTUNA_URL, "
        "else a file under root",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. http://host:5000); none: $GMP_MLFLOW_URI, else "
        "a store under root",
    )


class Failures(_Strict):
    """How often a trial is restarted from its last checkpoint after a crash."""

    max_failures: int = Field(
        2, ge=0, description="restarts of a crashed trial from its last checkpoint"
    )


class StudySpec(_Strict):
    """A whole study: target, sampler, fixed values, search space, objective and how to run it."""

    name: str = Field(
        description="the study's name (letters, digits, _ - .): running a file of the same name "
        "again resumes the study; `{sampler}` in it stands for the sampler (one file for "
        "several samplers: `gmp study run FILE --sampler mcd`)"
    )
    description: str = Field("", description="free text, shown in MLflow")
    target: TargetSpec = Field(description="the density to sample")
    sampler: SamplerName = Field("dis", description="the diffusion sampler")
    fixed: dict[str, Any] = Field(
        default_factory=dict, description="trainer settings shared by every trial (see below)"
    )
    search_space: dict[str, Param] = Field(
        default_factory=dict,
        description="what Optuna searches: trainer settings by their dotted path",
    )
    objective: list[Objective] = Field(
        min_length=1, description="one objective, or a list of them (multi-objective)"
    )
    budget: Budget = Field(description="trials and iterations")
    search: Search = Field(default_factory=Search, description="how trials are proposed")
    scheduler: Scheduler = Field(default_factory=Scheduler, description="early stopping")
    concurrency: int = Field(1, ge=1, description="trials running at the same time")
    resources: Resources = Field(default_factory=Resources, description="what a trial holds")
    seed: int = Field(
        0, description="every trial's training seed, unless `fixed` or `search_space` sets seed"
    )
    storage: Storage = Field(default_factory=Storage, description="where the study is recorded")
    address: str | None = Field(None, description="Ray cluster address; none: a local Ray")
    failures: Failures = Field(default_factory=Failures, description="crash restarts")

    @model_validator(mode="before")
    @classmethod
    def _sampler_in_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            sampler = data.get("sampler", "dis")
            if isinstance(sampler, str):
                data = {**data, "name": data["name"].replace("{sampler}", sampler)}
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name) or ".." in name:
            raise ValueError(
                "must be 1-100 letters, digits, '_', '-' or '.', start with a letter or digit "
                "and contain no '..'"
            )
        return name

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if len(self.objective) > 1 and self.scheduler.type != "none":
            raise ValueError("early stopping (scheduler) needs a single objective")
        if self.search.algorithm == "grid" and not all(
            isinstance(p, CategoricalParam) for p in self.search_space.values()
        ):
            raise ValueError("the grid algorithm needs categorical parameters only")
        for number, point in enumerate(self.search.first_trials):
            _check_point(point, self.search_space, f"search.first_trials.{number}")
        if len(self.search.first_trials) > self.budget.trials:
            raise ValueError(
                f"search.first_trials lists {len(self.search.first_trials)} trials; "
                f"the budget has {self.budget.trials}"
            )
        if self.imr_possible and self.resources.imr_parallel_tasks < 1:
            raise ValueError("resources.imr_parallel_tasks must be >= 1 when IMR is on")
        return self

    @property
    def imr_possible(self) -> bool:
        """Whether any trial of this study can run IMR (and so needs task resources)."""
        fixed = self.fixed.get("imr", {})
        enabled = isinstance(fixed, dict) and bool(fixed.get("enabled"))
        return enabled or "imr.enabled" in self.search_space

    @property
    def primary(self) -> Objective:
        """The objective that schedulers and 'best trial' use."""
        return self.objective[0]

    def trainer_config(self, params: dict[str, Any], seed: int | None = None) -> TrainerConfig:
        """The trial's full trainer configuration: fixed values, then sampled `params`.

        `annealing.iterations` (the length that temperature schedules are fractions of) is the
        budget's `iterations` unless the study sets it.
        """
        data = copy.deepcopy(self.fixed)
        for path, value in params.items():
            set_path(data, path, value)
        annealing = data.setdefault("annealing", {})
        if isinstance(annealing, dict):  # anything else fails the validation below, by name
            annealing.setdefault("iterations", self.budget.iterations)
        data["target"] = self.target.model_dump()
        data["sampler"] = self.sampler
        if seed is not None:
            data["seed"] = seed
        else:  # a seed in `fixed` or searched (replicates) wins over the study's
            data.setdefault("seed", self.seed)
        return TrainerConfig.model_validate(data)


class SpecError(ValueError):
    """A study file is invalid; `problems` lists 'field.path: reason' lines."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(f"{file}: invalid study file\n" + "\n".join(f"  {p}" for p in problems))


def load_spec(path: str | Path, sampler: str | None = None) -> StudySpec:
    """Read and fully validate a study file, with `sampler` (if given) in place of the file's;
    raises `SpecError` naming the file and fields.

    The file's folder is added to the end of the import path (`sys.path`), so that a target
    given as `module:function` finds a module beside the study file."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SpecError(file, [f"cannot read the file: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise SpecError(
            file, [f"not a text file: byte {err.start} is not UTF-8 (a study file is YAML text)"]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(file, [f"not valid YAML: {err}"]) from err
    except RecursionError:
        raise SpecError(file, ["nested too deeply to be a study file"]) from None
    if not isinstance(data, dict):
        raise SpecError(file, ["the file must hold a mapping of study fields"])
    importable(study_folder(path))
    return parse_spec(data if sampler is None else {**data, "sampler": sampler}, file)


def study_folder(path: str | Path) -> Path:
    """The folder of study file `path` (absolute): where its target modules may lie."""
    return Path(path).resolve().parent


def importable(folder: Path) -> None:
    """Append `folder` to `sys.path` unless it is there (modules installed or on PYTHONPATH win
    over ones of the same name in `folder`)."""
    if str(folder) not in sys.path:
        sys.path.append(str(folder))


def parse_spec(data: dict[str, Any], file: str = "<study>") -> StudySpec:
    """Validate a study given as a mapping; raises `SpecError` naming the fields."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(file, [_describe(e) for e in err.errors()]) from None
    problems = _target_problems(spec) or _check_trainer_values(spec)
    if problems:
        raise SpecError(file, problems)
    return spec


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def _target_problems(spec: StudySpec) -> list[str]:
    """The target must exist and take the given arguments (an outside target is built, so that
    a module that is missing, an attribute that is not there, or a factory that returns no valid
    `Target` is found here), and the objective's metrics must be ones the target can give."""
    target = spec.target
    try:
        targets.check_arguments(target.name, target.kwargs)
        facts = targets.info(target.name, target.kwargs)
    except targets.TargetArgumentError as err:
        return [f"target.kwargs: {err}"]
    except targets.TargetError as err:
        return [f"target.name: {err}"]
    return [
        f"objective.{i}.metric: {problem}"
        for i, goal in enumerate(spec.objective)
        if (problem := _metric_problem(goal.metric, facts))
    ]


def _metric_problem(metric: str, facts: targets.TargetInfo) -> str | None:
    if metric not in metrics_for(log_Z=facts.log_Z, samples=facts.samples, modes=facts.modes):
        return (
            f"objective metric {metric!r} needs a target with known "
            f"{CATALOGUE[metric].requires}; {facts.name!r} has none"
        )
    return None


def _check_trainer_values(spec: StudySpec) -> list[str]:
    """Every fixed value and every bound or choice of the search space must be a valid config."""
    problems = _config_problems(spec, {}, "fixed")
    if problems:
        return problems
    if not spec.search_space:
        return [
            "search_space: empty; search at least one setting (to repeat one configuration, "
            "search the seed: `seed: {type: categorical, choices: [0, 1, 2]}`), or train one "
            "configuration with `gmp train`"
        ]
    for path, param in spec.search_space.items():
        if path in _flatten(spec.fixed):
            problems.append(f"search_space.{path}: also given in 'fixed'; keep one")
            continue
        if not _is_config_path(path):
            problems.append(f"search_space.{path}: not a trainer setting (see trainers.config)")
            continue
        for value in param.values_to_check():
            found = _config_problems(spec, {path: value}, f"search_space.{path}")
            problems.extend(p for p in found if p not in problems)
    return problems


def _config_problems(spec: StudySpec, params: dict[str, Any], prefix: str) -> list[str]:
    try:
        spec.trainer_config(params)
    except ValidationError as err:
        value = f" (value {next(iter(params.values()))!r})" if params else ""
        return [f"{prefix}: {_describe(e)}{value}" for e in err.errors()]
    except TypeError as err:
        return [f"{prefix}: {err}"]
    return []


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set the dotted setting `path` (e.g. "optim.lr_network") in nested `data`; TypeError
    where a part of the path holds a value, not a group of settings."""
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise TypeError(f"{path}: {key!r} is not a group of settings")
        node = child
    node[leaf] = value


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _flatten(value, f"{path}.")
    return paths


def _is_config_path(path: str) -> bool:
    keys = path.split(".")
    if keys[0] in ("target", "sampler"):
        return False
    model: type[BaseModel] | None = TrainerConfig
    for key in keys:
        if model is None or key not in model.model_fields:
            return False
        annotation = model.model_fields[key].annotation
        is_group = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_group else None
    return model is None
