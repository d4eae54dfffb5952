"""The `gmp` command line: exit 0 on success, 1 on a failure, 2 on bad input, 130 when
interrupted (Ctrl-C; the same command resumes)."""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml
from rich.console import Console
from rich.table import Table

from orchestrator.spec import (
    CategoricalParam,
    SpecError,
    StudySpec,
    load_spec,
    parse_spec,
    set_path,
    study_folder,
)
from orchestrator.threads import (
    THREADS_ENV,
    AdaptiveThreads,
    ThreadSettingError,
    single_threaded_torch,
)
from trainers import native
from trainers.config import SamplerName

if TYPE_CHECKING:
    from orchestrator.driver import StudyLocations  # imports Ray: loaded where used

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_ROOT = Path("gmp-runs")


class BadInputError(Exception):
    """User input (a file, a field, an argument) is wrong; the message names it."""


# -- targets ---------------------------------------------------------------------------------
def _cmd_targets(args: argparse.Namespace, console: Console) -> int:
    import targets

    table = Table(title="gmp targets")
    for column in ("name", "dim", "log Z", "samples", "modes", "what"):
        table.add_column(column)
    for name in targets.names():
        try:
            facts = targets.info(name)
        except targets.TargetError as err:  # an entry point that cannot be built as it is
            table.add_row(name, "?", "?", "?", "?", str(err))
            continue
        table.add_row(
            name,
            facts.dim,
            _yes(facts.log_Z),
            _yes(facts.samples),
            _yes(facts.modes),
            facts.summary,
        )
    console.print(table)
    return EXIT_OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


# -- study run / status / list ---------------------------------------------------------------
def _load(file: str, sampler: str | None = None) -> tuple[StudySpec, str]:
    """The study in `file` (with `sampler` in place of the file's, if given) and its text."""
    try:
        spec = load_spec(file, sampler)
    except SpecError as err:
        raise BadInputError(str(err)) from None
    text = Path(file).read_text()
    if sampler is not None:
        text += f"\n# run with --sampler {sampler}\n"
    return spec, text


def _root(args: argparse.Namespace, spec: StudySpec | None = None) -> Path:
    if args.root is not None:
        return Path(args.root)
    return spec.storage.root if spec is not None else DEFAULT_ROOT


def _cmd_study_run(args: argparse.Namespace, console: Console) -> int:
    from orchestrator.driver import StudyConflictError, StudyLocations, run_study
    from orchestrator.interrupt import RESUME_HINT, StudyInterruptedError
    from orchestrator.recovery import StudyBusyError

    spec, text = _load(args.file, args.sampler)
    root = _root(args, spec)
    try:
        results = run_study(
            spec,
            text,
            root=root,
            address=args.address,
            join=args.join,
            code_dir=study_folder(args.file),
        )
    except StudyConflictError as err:
        raise BadInputError(str(err)) from None
    except StudyBusyError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except (StudyInterruptedError, KeyboardInterrupt):
        print(RESUME_HINT, file=sys.stderr)
        return EXIT_INTERRUPTED
    where = StudyLocations.resolve(spec, root)
    if not results:
        print(
            f"study {spec.name} is complete ({spec.budget.trials} trials); to give it more, "
            f"raise budget.trials in {args.file} and run it again"
        )
    print("\n".join(_answer_lines(spec, where, root, results)))
    return EXIT_OK


def _answer_lines(
    spec: StudySpec, where: StudyLocations, root: Path, results: Sequence[Any]
) -> list[str]:
    """The study's winner and the commands that show it, after a run."""
    from orchestrator.status import study_status

    status = study_status(where.optuna_url, where.mlflow_uri, spec.name)
    failed = sum(r.error is not None for r in results)
    failures = f", {failed} failed in this run" if failed else ""
    lines = [f"study {spec.name}: {len(status.rows)} trials{failures}"]
    best = status.best
    if best is not None and best.values:
        lines.append(
            f"winner: trial {best.number} ({best.family}) "
            f"{spec.primary.metric} = {best.values[0]:.4g}"
        )
    where_flag = "" if root == DEFAULT_ROOT else f" --root {root}"
    lines += [
        "next:",
        f"  gmp study status {spec.name}{where_flag}   # every trial",
        f"  gmp report {spec.name} --out report/{where_flag}   # prior families compared",
        f"  gmp export {spec.name} --out best/{where_flag}   # the winner as a sampler folder",
        f"  gmp ui{where_flag}   # MLflow UI and Optuna dashboard",
    ]
    return lines


def _cmd_study_submit(args: argparse.Namespace, console: Console) -> int:
    from orchestrator.submit import ClusterAccessError, SubmitInputError, submit_study

    spec, _ = _load(args.file)
    try:
        job = submit_study(spec, Path(args.file), args.address, root=args.root, follow=args.follow)
    except SubmitInputError as err:
        raise BadInputError(str(err)) from None
    except ClusterAccessError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    if job.status in (None, "SUCCEEDED"):
        return EXIT_OK
    return EXIT_BAD_INPUT if job.exit_code == EXIT_BAD_INPUT else EXIT_FAILURE


def _study_locations(args: argparse.Namespace, name: str) -> tuple[str, StudyLocations]:
    """The study's name and storage from NAME or its study file, --root and the URL options."""
    from orchestrator.driver import StudyLocations

    root, optuna_url, mlflow_uri = _root(args), args.optuna_url, args.mlflow_uri
    if Path(name).suffix in (".yaml", ".yml"):  # a study file: its name and storage URLs
        spec, _ = _load(name)
        name, root = spec.name, _root(args, spec)
        optuna_url = optuna_url or spec.storage.optuna_url
        mlflow_uri = mlflow_uri or spec.storage.mlflow_uri
    try:
        return name, StudyLocations.named(name, root, optuna_url, mlflow_uri)
    except ValueError as err:  # e.g. a name with a path separator or '..'
        raise BadInputError(str(err)) from None


def _missing_store(url: str) -> Path | None:
    """The folder of a local store (SQLite or journal file) `url` names, when it does not
    exist: reading it would create it, and records where none were asked for."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and not Path(url.removeprefix(scheme)).is_file():
            return Path(url.removeprefix(scheme)).parent
    return None


def _require_records(*urls: str) -> None:
    """Bad input, naming the folder, when a local store of `urls` does not exist."""
    for url in urls:
        folder = _missing_store(url)
        if folder is not None:
            raise BadInputError(
                f"no gmp records in {folder}/: run a study there first, or point --root "
                "(or the storage URL options) at the folder that holds them"
            )


def _cmd_study_status(args: argparse.Namespace, console: Console) -> int:
    name, where = _study_locations(args, args.name)
    _require_records(where.optuna_url)
    tracking = None if _missing_store(where.mlflow_uri) else where.mlflow_uri
    try:
        _print_status(console, where.optuna_url, tracking, name)
    except KeyError as err:
        raise BadInputError(str(err.args[0])) from None
    return EXIT_OK


def _print_status(console: Console, optuna_url: str, mlflow_uri: str | None, name: str) -> None:
    from orchestrator.status import study_status
    from orchestrator.status_view import status_lines

    status = study_status(optuna_url, mlflow_uri, name)
    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
    print("\n".join(status_lines(status, width)))


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cmd_study_list(args: argparse.Namespace, console: Console) -> int:
    from orchestrator.driver import OPTUNA_URL_ENV
    from orchestrator.status import list_studies
    from storage.layout import StudyPaths

    url = args.optuna_url or os.environ.get(OPTUNA_URL_ENV) or StudyPaths(_root(args)).optuna_url
    _require_records(url)
    table = Table(title="gmp studies")
    for column in ("study", "trials", "best value", "direction", "started"):
        table.add_column(column)
    for summary in list_studies(url):
        best = summary.best_trial.values[0] if summary.best_trial else None
        started = (
            summary.datetime_start.strftime("%Y-%m-%d %H:%M") if summary.datetime_start else "-"
        )
        table.add_row(
            summary.study_name,
            str(summary.n_trials),
            _short(best),
            ", ".join(d.name.lower() for d in summary.directions),
            started,
        )
    console.print(table)
    return EXIT_OK


# -- train (one trial in-process) ------------------------------------------------------------
def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from trainers import Trainer

    spec, _ = _load(args.file)
    spec, params = _with_settings(spec, args.set or [], args.iterations)
    try:
        config = spec.trainer_config(params)
    except ValueError as err:
        raise BadInputError(f"--set values: {err}") from None
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise BadInputError(f"--out {out}: the folder exists and is not empty")
    try:
        threads = AdaptiveThreads()
        native.setting()
    except (ThreadSettingError, ValueError) as err:
        raise BadInputError(str(err)) from None
    single_threaded_torch()
    if threads.fixed is None:
        thread_note = f"up to {threads.most} CPU threads, fewer while other work holds the CPUs"
    else:
        thread_note = f"{threads.fixed} CPU thread{'s' if threads.fixed > 1 else ''}"
    console.print(
        f"training {spec.name} ({spec.sampler}, {spec.target.name}) for "
        f"{spec.budget.iterations} iterations with {params or 'the fixed settings'} "
        f"({thread_note}; set {THREADS_ENV} to change)",
        markup=False,
    )
    trainer = Trainer(config)
    if trainer.sampler.uses_compiled_step(config.batch_size, threads.most):
        _prepare_compiled_step(console)  # its compiler's CPU time counts as gmp's own
    shown = spec_metrics(spec)
    start = time.perf_counter()
    while trainer.iteration < spec.budget.iterations:
        trainer.threads = threads.next()
        trainer.train(min(spec.budget.eval_interval, spec.budget.iterations - trainer.iteration))
        metrics = trainer.evaluate().metrics
        values = "  ".join(f"{m}={_short(metrics.get(m))}" for m in shown)
        elapsed = time.perf_counter() - start
        console.print(
            f"iteration {trainer.iteration:>6}/{spec.budget.iterations}  {elapsed:7.1f}s  "
            f"{values}  threads={trainer.threads}",
            markup=False,
        )
        if not math.isfinite(metrics.get(spec.primary.metric, math.nan)):
            console.print(f"objective {spec.primary.metric} is not finite; stopping", style="red")
            return EXIT_FAILURE
    if out is not None:
        trainer.save(out)
        console.print(f"saved to {out}: trainers.load({str(out)!r}).sample(1000) draws from it")
    return EXIT_OK


def _prepare_compiled_step(console: Console) -> None:
    """Build (on the first run) or load the compiled training step before the first iteration,
    saying so while it builds (trainers/native.py)."""
    start = time.perf_counter()
    with console.status("preparing the compiled training step (the first run builds it)"):
        built = native.ops()
    elapsed = time.perf_counter() - start
    if built is not None and elapsed > 2.0:
        console.print(
            f"built the compiled training step in {elapsed:.0f} s; later runs reuse it",
            markup=False,
        )


def _with_settings(
    spec: StudySpec, assignments: list[str], iterations: int | None
) -> tuple[StudySpec, dict[str, Any]]:
    """The study with `--set KEY=VALUE` applied (a search-space key fixes that value; any other
    dotted trainer key, `sampler` included, overrides the fixed settings) and `--iterations`;
    the search-space values of the one trial (unset ones: the middle of their range)."""
    params = _middle_of_space(spec)
    fixed = copy.deepcopy(spec.fixed)
    update: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise BadInputError(f"--set {assignment!r}: expected KEY=VALUE")
        value = yaml.safe_load(text)
        if key in spec.search_space:
            params[key] = value
        elif key == "sampler":
            update["sampler"] = value
        else:
            try:
                set_path(fixed, key, value)
            except TypeError as err:
                raise BadInputError(f"--set {assignment!r}: {err}") from None
    if iterations is not None:
        if iterations < 1:
            raise BadInputError(f"--iterations {iterations}: must be >= 1")
        interval = min(spec.budget.eval_interval, iterations)
        update["budget"] = spec.budget.model_copy(
            update={"iterations": iterations, "eval_interval": interval}
        )
    data = {**spec.model_dump(), **update, "fixed": fixed}
    try:
        return parse_spec(data, "--set"), params
    except SpecError as err:
        raise BadInputError("\n".join(["--set/--iterations:", *err.problems])) from None


def spec_metrics(spec: StudySpec) -> list[str]:
    """Metrics worth printing for this study's target."""
    import targets
    from trainers.metrics import metrics_for

    facts = targets.info(spec.target.name, spec.target.kwargs)
    return list(metrics_for(log_Z=facts.log_Z, samples=facts.samples, modes=facts.modes))


def _middle_of_space(spec: StudySpec) -> dict[str, Any]:
    """A representative point: first choice, or the (geometric) middle of a range."""
    params: dict[str, Any] = {}
    for key, param in spec.search_space.items():
        if isinstance(param, CategoricalParam):
            params[key] = param.choices[0]
            continue
        middle = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
        params[key] = round(middle) if param.type == "int" else middle
    return params


# -- ui --------------------------------------------------------------------------------------
def _cmd_ui(args: argparse.Namespace, console: Console) -> int:
    from orchestrator.ui import PortTakenError, Servers, check_ports, serve, study_links
    from storage.layout import StudyPaths

    paths = StudyPaths(_root(args))
    if not paths.mlflow_store.is_file():
        raise BadInputError(f"no MLflow store under {paths.root}: run a study first (--root)")
    _require_records(paths.optuna_url)
    servers = Servers(
        host=args.host,
        mlflow_port=args.port,
        dashboard_port=args.dashboard_port,
        mlflow_uri=paths.mlflow_uri,
        mlflow_artifacts=paths.mlflow_artifacts.as_uri(),
        optuna_url=paths.optuna_url,
    )
    try:
        check_ports(args.host, {"--port": args.port, "--dashboard-port": args.dashboard_port})
    except PortTakenError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    links = study_links(paths.mlflow_uri, args.host, args.port)
    lines = [
        f"records in {paths.root}:",
        f"  MLflow UI         http://{args.host}:{args.port}",
        f"  Optuna dashboard  http://{args.host}:{args.dashboard_port}/dashboard",
        "each study's runs in the MLflow UI:",
        *(f"  {name}  {link}" for name, link in links.items()),
        "Ctrl-C stops both.",
    ]
    print("\n".join(lines), flush=True)
    return serve(servers)


# -- report ----------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from mlflow.tracking import MlflowClient

    from orchestrator.driver import MLFLOW_URI_ENV
    from storage.layout import StudyPaths
    from storage.records import RecordsError
    from storage.report import write_report

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = args.mlflow_uri or os.environ.get(MLFLOW_URI_ENV) or StudyPaths(_root(args)).mlflow_uri
    _require_records(uri)
    client = MlflowClient(uri)
    try:
        report = write_report(client, args.studies, args.out, log_to_parent=not args.no_log)
    except RecordsError as err:
        raise BadInputError(str(err.args[0])) from None
    console.print(
        f"report on {len(report.groups)} groups of {sum(len(g.trials) for g in report.groups)} "
        f"trials ({len(report.left_out)} left out): {Path(args.out) / 'report.html'}"
    )
    return EXIT_OK


# -- export ----------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace, console: Console) -> int:
    from storage.export import ExportInputError, MissingCheckpointError, export_trial, register

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name, where = _study_locations(args, args.study)
    _require_records(where.optuna_url, where.mlflow_uri)
    try:
        out = export_trial(where.optuna_url, where.mlflow_uri, name, args.out, args.trial)
    except (ExportInputError, FileExistsError) as err:
        raise BadInputError(str(err)) from None
    except MissingCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    console.print(f"exported study {name} to {out}")
    if args.register:
        version = register(out, args.register, where.mlflow_uri)
        console.print(
            f"registered as models:/{args.register}/{version.version} "
            f"(alias: models:/{args.register}@{', '.join(version.aliases)})"
        )
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every `gmp` command."""
    parser = argparse.ArgumentParser(
        prog="gmp",
        description="Diffusion samplers with learnable Gaussian-mixture priors: studies on Ray, "
        "tracked in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def root_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help=f"local records folder (default: {DEFAULT_ROOT}/)")

    def storage_options(p: argparse.ArgumentParser) -> None:
        root_option(p)
        p.add_argument(
            "--optuna-url", help="Optuna storage URL (default: $GMP_OPTUNA_URL, else under --root)"
        )
        p.add_argument(
            "--mlflow-uri", help="MLflow tracking URI (default: $GMP_MLFLOW_URI, else under --root)"
        )

    study = commands.add_parser("study", help="run and inspect studies")
    study_commands = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    run = study_commands.add_parser("run", help="run (or resume) the study in FILE")
    run.add_argument("file", metavar="FILE", help="study file (YAML)")
    run.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    run.add_argument(
        "--sampler",
        choices=get_args(SamplerName),
        help="the sampler, in place of the file's (a name with {sampler} follows it)",
    )
    run.add_argument(
        "--join",
        action="store_true",
        help="run more trials alongside a driver that already runs this study",
    )
    root_option(run)
    run.set_defaults(handler=_cmd_study_run)
    submit = study_commands.add_parser("submit", help="run the study in FILE as a Ray job")
    submit.add_argument("file", metavar="FILE", help="study file (YAML)")
    submit.add_argument(
        "--address", required=True, help="the cluster's Ray dashboard, e.g. http://127.0.0.1:8265"
    )
    submit.add_argument("--follow", action="store_true", help="stream the job's log to its end")
    submit.add_argument(
        "--root", help="records folder on the cluster (default: the file's, under $HOME there)"
    )
    submit.set_defaults(handler=_cmd_study_submit)
    status = study_commands.add_parser("status", help="trials, states, progress, best trial")
    status.add_argument("name", metavar="NAME", help="study name, or its study file (YAML)")
    storage_options(status)
    status.set_defaults(handler=_cmd_study_status)
    listing = study_commands.add_parser("list", help="every study in the storage")
    root_option(listing)
    listing.add_argument(
        "--optuna-url", help="Optuna storage URL (default: $GMP_OPTUNA_URL, else under --root)"
    )
    listing.set_defaults(handler=_cmd_study_list)

    train = commands.add_parser("train", help="train one trial of FILE in-process (no Ray)")
    train.add_argument("file", metavar="FILE", help="study file (YAML)")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="fix a search-space value, or override any dotted trainer setting "
        "(e.g. prior.k_max=10, optim.lr_network=1e-3, sampler=cmcd)",
    )
    train.add_argument("--iterations", type=int, help="train this many iterations")
    train.add_argument("--out", metavar="DIR", help="save the trained sampler into DIR")
    train.set_defaults(handler=_cmd_train)

    ui = commands.add_parser(
        "ui", help="serve the MLflow UI and the Optuna dashboard on the local records"
    )
    root_option(ui)
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="MLflow UI port (default 5000)")
    ui.add_argument(
        "--dashboard-port", type=int, default=8080, help="Optuna dashboard port (default 8080)"
    )
    ui.set_defaults(handler=_cmd_ui)

    report = commands.add_parser(
        "report", help="compare studies' prior families: Markdown, PNG and HTML from MLflow"
    )
    report.add_argument("studies", metavar="STUDY", nargs="+", help="study names")
    report.add_argument("--out", required=True, metavar="DIR", help="output folder")
    root_option(report)
    report.add_argument(
        "--mlflow-uri", help="MLflow tracking URI (default: $GMP_MLFLOW_URI, else under --root)"
    )
    report.add_argument(
        "--no-log", action="store_true", help="do not log the report on the parent runs"
    )
    report.set_defaults(handler=_cmd_report)

    export = commands.add_parser(
        "export", help="a trial as a sampler folder (safetensors, JSON, model card)"
    )
    export.add_argument("study", metavar="STUDY", help="study name, or its study file (YAML)")
    export.add_argument(
        "--trial", type=int, metavar="N", help="Optuna trial number (default: the best trial)"
    )
    export.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    export.add_argument(
        "--register", metavar="NAME", help="also register in the MLflow Model Registry as NAME"
    )
    storage_options(export)
    export.set_defaults(handler=_cmd_export)

    listing = commands.add_parser(
        "targets", help="list every target with its dimension and what is known about it"
    )
    listing.set_defaults(handler=_cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gmp` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
