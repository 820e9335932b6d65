"""The `bench` command line: run suites, make and look at data, report, open the MLflow UI."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import shlex
import sys
import typing
from inspect import signature
from pathlib import Path

from lensbench.bench.tasks import PROFILES, SUITES
from lensbench.datasets.interrupts import check_stop, stop_on_signals

DEFAULT_WORKDIR = Path(os.environ.get("LENSBENCH_WORKDIR", ".lensbench"))


def _add_workdir(parser):
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where splits, results.jsonl, run artefacts and the MLflow store "
                             "live (default: $LENSBENCH_WORKDIR or ./.lensbench)")


def _add_cluster(parser, what: str):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int_at_least(1), default=1,
                       help=f"> 1: a local Dask cluster of this many one-thread worker "
                            f"processes ({what})")
    group.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address,
                       help=f"a running Dask scheduler, e.g. tcp://10.0.0.5:8786 ({what})")


def scheduler_address(text: str) -> str:
    """An argparse ``type``: a Dask scheduler's address with its port, checked before any work
    (Dask's own error named no flag, and came after the workdir was made)."""
    from distributed.comm import get_address_host_port

    try:
        get_address_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; expected the scheduler's address, e.g. "
                                         "tcp://10.0.0.5:8786") from None
    return text


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``, else the usage error naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got "
                                             f"{text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def finite_float(minimum: float | None = None):
    """An argparse ``type``: a finite number (above ``minimum`` when given), else the usage
    error naming the flag (``float`` alone takes 'nan', 'inf' and negative scales)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (minimum is not None and value <= minimum):
            bound = f" > {minimum:g}" if minimum is not None else ""
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
        return value
    return parse


def number_or_path(text: str) -> float | Path:
    """An argparse ``type``: a finite number > 0, or else a file's path (read later, where a
    bad file gets its own error)."""
    try:
        return finite_float(0)(text)
    except argparse.ArgumentTypeError:
        if Path(text).is_file():
            return Path(text)
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 or an existing file, "
                                         f"got {text!r}") from None


def check_output_folder(path: Path, flag: str) -> None:
    """Before any work: ``path`` (given by ``flag``) can be a folder to write in, with no file
    in the way and, where it exists, write permission; else a ValueError naming the flag."""
    existing = next(part for part in (path, *path.parents) if os.path.lexists(part))
    if not existing.is_dir():
        where = f"{path} is" if existing == path else f"{path}: {existing} is"
        raise ValueError(f"{flag} {where} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is not writable")


def check_output_file(path: Path, flag: str) -> None:
    """Before any work: ``path`` (given by ``flag``) can be a file to write, in a folder that
    can be written; else a ValueError naming the flag."""
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a folder; name the file to write in it")
    check_output_folder(Path(path).parent, flag)


# Python's spellings, which users of a Python tool type, beside JSON's null/true/false.
PYTHON_LITERALS = {"None": None, "True": True, "False": False}


def parse_value(text: str):
    """A ``--param`` value: a Python literal name, JSON where it parses, else the string."""
    if text in PYTHON_LITERALS:
        return PYTHON_LITERALS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _check_value(cls, key: str, value, where: str) -> None:
    """ValueError naming ``where`` if ``value`` does not fit the type of ``cls``'s parameter
    ``key``: "None" read as the string would otherwise fail deep inside a run."""
    from lensbench.datasets.typecheck import fits_type, type_text

    try:
        hint = typing.get_type_hints(cls.__init__).get(key)
    except (NameError, TypeError):  # a hint that names something not importable here
        return
    if hint is not None and fits_type(value, hint) is False:
        raise ValueError(f"{where}={value!r}: {cls.__name__} expects {type_text(hint)}")


def _parse_params(items: list[str]) -> dict[str, dict]:
    """``method.key=value`` items -> {method: {key: value}} (values parsed as JSON if possible)."""
    params: dict[str, dict] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        method, dot, key = name.partition(".")
        if not (sep and dot and method and key):
            raise ValueError(f"--param {item!r}: expected METHOD.KEY=VALUE, e.g. "
                             "pixel-logreg.C=0.1")
        params.setdefault(method, {})[key] = parse_value(value)
    return params


def _did_you_mean(name: str, known) -> str:
    """A close match among ``known``, ignoring case (``c`` for ``C``)."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f" Did you mean {by_lower[close[0]]!r}?" if close else ""


def _check_params(params: dict[str, dict], names: list[str], flag: str) -> dict[str, dict]:
    """``params`` ({method: {key: value}}, given with ``flag``) if every method is registered and
    in this run (``names``) and every key is a parameter of its class; else ValueError naming
    the parameter: a typo would otherwise run the method with its default, unnoticed."""
    from lensbench.baselines.registry import resolve_method

    for method, values in params.items():
        where = f"{flag} {method}.{next(iter(values), '')}"
        try:
            cls = resolve_method(method)
        except KeyError as error:
            raise ValueError(f"{where}: {error.args[0]}") from None
        if method not in names:
            raise ValueError(f"{where}: method {method!r} is not in this run (methods: "
                             f"{', '.join(names)})")
        accepted = signature(cls).parameters
        if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            continue
        for key, value in values.items():
            if key not in accepted:
                raise ValueError(f"{flag} {method}.{key}: {cls.__name__} ({method}) takes no "
                                 f"parameter {key!r}.{_did_you_mean(key, accepted)} Its "
                                 f"parameters: {', '.join(accepted)}")
            _check_value(cls, key, value, f"{flag} {method}.{key}")
    return params


def _merge_params(*sources: dict[str, dict]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for source in sources:
        for method, values in source.items():
            merged.setdefault(method, {}).update(values)
    return merged


def _cluster_for(args, workdir: Path):
    """The Dask client of ``--workers N`` (N > 1) or ``--scheduler``, else a null context."""
    if args.scheduler is None and args.workers == 1:
        return contextlib.nullcontext()
    from lensbench.bench.distributed import cluster

    Path(workdir).mkdir(parents=True, exist_ok=True)
    return cluster(args.workers, args.scheduler, workdir=Path(workdir))


def _with_variants(suite, names: str, profile: str):
    """The design suite narrowed to the training-set variants ``names`` (comma-separated)."""
    from lensbench.bench.suites.design import variants_for

    if any(task.kind != "design" for task in suite.tasks):
        raise ValueError(f"--variants: suite {suite.name} has no training-set variants (the "
                         "design suite has)")
    chosen = tuple(name.strip() for name in names.split(",") if name.strip())
    try:
        variants_for(profile, chosen)
    except ValueError as error:
        raise ValueError(f"--variants: {error}") from None
    return dataclasses.replace(suite, tasks=tuple(
        dataclasses.replace(task, variants=chosen) for task in suite.tasks))


def _with_tasks(suite, names: str):
    """The suite narrowed to the tasks ``names`` (comma-separated full names or unique suffixes,
    as `bench tune --task`); each task keeps its splits and its method seeds."""
    from lensbench.bench.tasks import find_task

    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        try:
            task = find_task(suite, name)
        except KeyError as error:
            raise ValueError(f"--tasks: {error.args[0]}") from None
        if task not in chosen:
            chosen.append(task)
    if not chosen:
        raise ValueError("--tasks: no task named")
    return dataclasses.replace(suite, tasks=tuple(chosen))


def cmd_run(args) -> int:
    from lensbench.baselines.registry import resolve_method
    from lensbench.bench.runner import suite_lock
    from lensbench.bench.tasks import get_suite

    suite = get_suite(args.suite)
    check_output_folder(args.workdir, "--workdir")
    if args.tasks:
        suite = _with_tasks(suite, args.tasks)
    if args.variants:
        suite = _with_variants(suite, args.variants, args.profile)
    methods = args.methods.split(",") if args.methods else None
    # Every method name and parameter is checked before any work (simulation, tracking).
    names = list(methods or suite.methods_for(args.profile))
    for name in names:
        try:
            resolve_method(name)
        except KeyError as error:
            raise ValueError(f"{'--methods' if methods else f'suite {suite.name}'}: "
                             f"{error.args[0]}") from None
    params = _merge_params(
        _check_params(_params_from_file(args.params), names, f"--params {args.params}:"),
        _check_params(_parse_params(args.param), names, "--param"))
    with suite_lock(args.workdir, suite.name, args.profile):
        return _run_locked(args, suite, methods, params)


def _run_locked(args, suite, methods: list[str] | None, params: dict) -> int:
    """`bench run` once the suite's lock on the workdir is held (before any MLflow run)."""
    from lensbench.bench.runner import run_suite

    tracker = None
    if not args.no_tracking:
        from lensbench.bench.kinds import MINIMIZE, kind_of
        from lensbench.bench.tracking import MlflowTracker, default_tracking_uri

        uri = args.tracking_uri or default_tracking_uri(args.workdir)
        tracker = MlflowTracker(uri, experiment=f"lensbench-{suite.name}",
                                splits_dir=args.workdir / "splits")
        # The MLflow runs view shows each task's main metric and headline metrics first.
        main_metrics = list(dict.fromkeys(metric for task in suite.tasks
                                          for metric in (task.main_metric, *task.metrics)))
        tracker.start_suite(suite.name, args.profile, args.seed,
                            params={"methods": ",".join(methods or suite.methods_for(
                                args.profile)), "resume": args.resume},
                            main_metrics=main_metrics,
                            lower_is_better=kind_of(suite).direction(main_metrics[0]) == MINIMIZE,
                            task_versions={task.name: task.version for task in suite.tasks})
    print(f"suite {suite.name} · profile {args.profile} · seed {args.seed} · workdir "
          f"{args.workdir}")
    status = "FINISHED"
    # Ctrl-C and `kill` (SIGTERM, what schedulers and timeouts send; main() turns both into
    # KeyboardInterrupt): the finished runs stay in results.jsonl and the MLflow suite run is
    # marked KILLED, not left RUNNING.
    try:
        with _cluster_for(args, args.workdir) as client:
            cluster_loop = None
            if client is not None:
                from lensbench.bench.distributed import run_on_cluster

                cluster_loop = functools.partial(run_on_cluster, client)
            results = run_suite(suite, profile=args.profile, seed=args.seed,
                                workdir=args.workdir, methods=methods, params=params,
                                tracker=tracker, resume=args.resume, cluster_loop=cluster_loop)
        check_stop()  # a stop whose KeyboardInterrupt a callback dropped after the last check
    except KeyboardInterrupt:
        status = "KILLED"
        print("bench: interrupted: finished runs are in results.jsonl; rerun with --resume",
              file=sys.stderr)
        return 130
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if tracker is not None:
            tracker.end_suite(status)
    failed = [r for r in results if r.status == "failed"]
    print(f"{len(results)} runs, {len(failed)} failed; results in "
          f"{args.workdir / 'results.jsonl'}; `bench report --suite {suite.name}"
          f"{_same_store_options(args)}{_report_seed_option(args, suite.name)}` writes the "
          "leaderboard")
    return 1 if failed and args.strict else 0


def _report_seed_option(args, suite: str) -> str:
    """`--seed N` for the report of this run, where the store holds another seed of the suite
    and profile (a report is of one seed; without it, bench report asks which)."""
    from lensbench.bench.report import stored_seeds
    from lensbench.bench.results import read_results

    seeds = stored_seeds(read_results(args.workdir / "results.jsonl"), suite, args.profile)
    return f" --seed {args.seed}" if set(seeds) - {args.seed} else ""


def _same_store_options(args) -> str:
    """The --profile and --workdir a suggested next command needs to find what this one made
    (none where they are the defaults)."""
    from lensbench.bench.tasks import DEFAULT_PROFILE

    options = ""
    if args.profile != DEFAULT_PROFILE:
        options += f" --profile {args.profile}"
    if args.workdir != DEFAULT_WORKDIR:
        options += f" --workdir {shlex.quote(str(args.workdir))}"
    return options


def _params_from_file(path: Path | None) -> dict[str, dict]:
    """``{method: {param: value}}`` from a JSON file such as `bench tune`'s best_params.json."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--params {path}: cannot read a JSON object of method params: "
                         f"{error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--params {path}: expected {{method: {{param: value}}}}, got a JSON "
                         f"{type(data).__name__}")
    for method, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"--params {path}: {method!r} must map parameter names to values "
                             f"({{param: value}}), got {values!r}")
    return data


def cmd_tune(args) -> int:
    from lensbench.bench.tasks import find_task, get_suite
    from lensbench.bench.tune import tune

    suite = get_suite(args.suite)
    check_output_folder(args.workdir, "--workdir")
    fixed = _check_params(_parse_params(args.param), [args.method], "--param")  # before any work
    tracker = None
    if not args.no_tracking:
        from lensbench.bench.tracking import MlflowTracker, default_tracking_uri

        uri = args.tracking_uri or default_tracking_uri(args.workdir)
        tracker = MlflowTracker(uri, experiment=f"lensbench-tune-{suite.name}")
    outcome = tune(suite, args.task, args.method, trials=args.trials, workdir=args.workdir,
                   profile=args.profile, seed=args.seed, metric=args.metric,
                   fixed_params=fixed.get(args.method, {}), study_name=args.study,
                   storage=args.storage, timeout=args.timeout, n_jobs=args.n_jobs,
                   pruner=args.pruner, tracker=tracker)
    print(f"study {outcome.study_name}: {outcome.n_trials} trials, best validation "
          f"{outcome.metric} ({outcome.direction}) {outcome.best_value}, params "
          f"{outcome.best_params}")
    # The params were tuned on this task alone: the run they suggest is of this task alone.
    print(f"best params in {outcome.params_file}; use them with `bench run --suite "
          f"{suite.name} --tasks {find_task(suite, args.task).name} --methods {args.method} "
          f"--params {outcome.params_file}{_same_store_options(args)}`")
    return 0


def cmd_list(args) -> int:
    from lensbench.baselines.registry import METHODS
    from lensbench.bench.tasks import SUITES

    def described(params: dict[str, dict]) -> str:
        return "; ".join(f"{method} " + ", ".join(f"{key}={value}" for key, value in
                                                  values.items())
                         for method, values in params.items() if values)

    print("suites:")
    for suite in SUITES.values():
        print(f"  {suite.name:10} {suite.description}")
        for task in suite.tasks:
            sizes = ", ".join(f"{p} {tr}/{te}" for p, (tr, te) in task.sizes.items())
            print(f"    task {task.name} v{task.version}: {task.description} [{sizes}]")
            if task.method_params.get("default"):
                print(f"      its own params: {described(task.method_params['default'])}")
        print(f"    methods: {', '.join(suite.methods_for('default'))}")
        if suite.params_for("default"):
            print(f"    params: {described(suite.params_for('default'))}")
    print("methods:")
    for name, target in METHODS.items():
        print(f"  {name:16} {target}")
    return 0


def cmd_report(args) -> int:
    from lensbench.bench.report import check_reports, write_report

    if args.check:
        # One line per report; rc 1 when any was made from splits the current code no longer
        # makes (or cannot be verified to be), so a CI step can run it.
        checks = check_reports(args.out)
        for path, reason in checks:
            print(f"{path}: " + (f"stale: {reason}" if reason else "current"))
        return 1 if any(reason for _, reason in checks) else 0
    if not args.suite:
        raise ValueError("bench report needs --suite SUITE (or --check)")
    check_output_folder(args.out, "--out")
    paths = write_report(args.suite, workdir=args.workdir, out_dir=args.out,
                         profile=args.profile, command=" ".join(["bench", *sys.argv[1:]]),
                         seed=args.seed)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_ui(args) -> int:
    from lensbench.bench.tracking import (
        default_tracking_uri,
        latest_suite_experiment,
        mlflow_ui_command,
        mlflow_ui_environment,
        runs_view_url,
    )

    uri = args.tracking_uri or default_tracking_uri(args.workdir)
    command = mlflow_ui_command(uri, host=args.host, port=args.port)
    # A server listening on every interface is browsed on this machine's own address.
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base_url = f"http://{host}:{args.port}"
    print(f"MLflow UI on {base_url} for {uri}", flush=True)
    try:
        latest = latest_suite_experiment(uri)
    except Exception as error:  # the UI still starts; it will report what is wrong
        print(f"bench ui: cannot look up the latest suite in {uri}: {error}", file=sys.stderr)
        latest = None
    if latest is not None:
        print(f"runs of the latest suite, main metrics first: {runs_view_url(base_url, *latest)}",
              flush=True)
    # Become the UI, so signals reach it directly.
    os.execve(command[0], command, mlflow_ui_environment(dict(os.environ)))


def _parse_negatives(text: str) -> dict[str, float]:
    """``CLASS=FRACTION,...`` (e.g. ``elliptical=0.5,spiral=0.2,ring=0.3``) or a JSON object."""
    if text.lstrip().startswith("{"):
        return json.loads(text)
    shares = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--negatives {text!r}: expected CLASS=FRACTION,... e.g. "
                             "elliptical=0.5,spiral=0.25,ring=0.25")
    return shares


def make_config(args):
    """The SimConfig of ``bench data make``: the preset's defaults, then ``--config`` (a JSON
    object of SimConfig fields), then ``--negatives`` / ``--source-model``, then ``--set``."""
    from lensbench.datasets.config import SimConfig

    record = SimConfig(survey=args.preset).to_dict()
    given = {}  # field -> the option that set it, named in an error about that field
    if args.config is not None:
        try:
            loaded = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {args.config}: not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of SimConfig "
                             f"fields, got {type(loaded).__name__}")
        record.update(loaded)
        given.update(dict.fromkeys(loaded, f"--config {args.config}"))
    if args.negatives is not None:
        record["negatives"] = _parse_negatives(args.negatives)
        given["negatives"] = "--negatives"
    if args.source_model is not None:
        record["source_model"] = args.source_model
        given["source_model"] = "--source-model"
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE (a SimConfig field)")
        record[key] = parse_value(value)
        given[key] = f"--set {key}"
    try:
        return SimConfig.from_dict(record)
    except ValueError as error:
        field = re.match(r"SimConfig\.(\w+)", str(error))
        if field is None or field.group(1) not in given:
            raise
        raise ValueError(f"{given[field.group(1)]}: {error}") from None


def cmd_data_make(args) -> int:
    from lensbench.datasets.simulate import make_split
    from lensbench.datasets.storage import check_replaceable
    from tqdm.auto import tqdm

    check_output_folder(args.out, "--out")
    try:
        check_replaceable(args.out)
    except FileExistsError as error:
        raise ValueError(f"--out {error}") from None
    config = make_config(args)
    try:
        with _cluster_for(args, args.out.parent) as client, \
                tqdm(total=args.n, desc=f"simulate {args.preset}", unit="img") as bar:
            mapper = None
            if client is not None:
                from lensbench.bench.distributed import shard_mapper

                if args.device != "cpu":
                    raise ValueError(f"--device {args.device}: with --workers or --scheduler "
                                     "the workers render on the CPU; drop one of them")

                mapper = shard_mapper(client)
            out = make_split(config, args.n, args.seed, args.out, progress=bar.update,
                             device=check_device(args.device), map_shards=mapper,
                             created_by="bench data make" + ("" if args.device == "cpu" else
                                                              f" on {args.device}"))
    except KeyboardInterrupt:
        print(f"bench: interrupted: {args.out} was left as it was; rerun the command to make "
              "the split", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0


def cmd_data_probe(args) -> int:
    """Which arithmetic this machine's simulator has: whether the splits it makes have the
    reports' bytes (bench/splits.py: the probe)."""
    from lensbench.bench.splits import probe_hashes, probe_lines

    print(probe_lines(probe_hashes())[0])
    return 0


def cmd_data_show(args) -> int:
    """A gallery of the split. When its truth names the classes of non-lenses (splits made with
    hard negatives or artefacts), one row per class (and artefact kind), ``--per-class`` each;
    otherwise the first ``--n`` cutouts."""
    import numpy as np
    from lensbench.bench.plots import display_bands
    from lensbench.datasets import negatives
    from lensbench.datasets.gallery import grouped_layout, save_gallery
    from lensbench.datasets.storage import load_split

    split = load_split(args.split, verify=True)
    truth = split.truth
    bands, picked = display_bands(list(split.bands))
    by_class = "negative_class" in truth or "artefact_kind" in truth
    if by_class:
        groups = negatives.class_groups(truth, args.per_class)
        rows = np.concatenate([group for _, group in groups])
        ncols = min(args.ncols, args.per_class)
        starts = np.cumsum([0] + [len(group) for _, group in groups])
        layout = grouped_layout([range(a, b) for a, b in zip(starts[:-1], starts[1:],
                                                            strict=True)], ncols)
    else:
        rows = np.arange(min(args.n, split.n))
        ncols, layout = args.ncols, None
    images = split.images(rows)[:, picked]
    # Masked pixels hold MASK_VALUE (100 nMgy, as in the Metcalf data): drawn as 0 (black in
    # that band) so they do not set the stretch of the whole panel.
    images[images == negatives.MASK_VALUE] = 0.0
    names = negatives.class_names(truth)
    captions = []
    for r in rows:
        if truth["label"][r]:
            extra = names[r][len("lens"):]
            captions.append(f"lens θE={truth['theta_e'][r]:.2f}\" n={truth['n_images'][r]}"
                            f"{extra}")
        else:
            captions.append(names[r])
    title = f"{split.path.name}: {'/'.join(bands)} composites"
    if by_class:
        title += f", {args.per_class} per class (masked pixels drawn as 0)"
    path = save_gallery(images, bands, captions, args.out, ncols=ncols, title=title,
                        layout=layout)
    print(f"wrote {path}")
    return 0


RECURSIVE_HELP = ("a folder of FITS cutouts: read its subfolders too (ids become paths in it, "
                  "night2/obj7); without, only its top level is read")
DEVICE_HELP = ("where a torch model scores, whatever it was trained on: auto (CUDA when torch "
               "sees one, else the CPU), cpu, cuda")


def check_device(device: str) -> str:
    """``device`` when torch can use it; a CUDA device torch does not see is a usage error."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here")
    return device


def cmd_perf_sim(args) -> int:
    from lensbench.bench.tools.perf import simulation_throughput

    check_device(args.device)
    result = simulation_throughput(args.n, args.lenstronomy_n, seed=args.seed,
                                   device=args.device)
    print("\n".join(result.lines()))
    return 0


def cmd_perf_gpu(args) -> int:
    from lensbench.bench.tools.perf_gpu import command_line, gpu_compare

    options = {"profile": args.profile, "device": args.device, "seed": args.seed,
               "workdir": args.workdir, "methods": tuple(args.methods)}
    if args.out is not None:
        options["out"] = args.out
    if args.speed_epochs is not None:
        options["speed_epochs"] = args.speed_epochs
    if args.together is not None:
        options["together"] = args.together
    gpu_compare(**options, command=command_line(options))
    return 0


def _add_preparation(parser: argparse.ArgumentParser):
    """The flags that prepare real cutouts to a model's inputs (bench scan, bench predict);
    returns their argument group."""
    prep = parser.add_argument_group(
        "preparing real cutouts to the model's inputs (README: Scanning real cutouts); any of "
        "these turns it on")
    prep.add_argument("--prepare", action="store_true",
                      help="convert units, resample, map bands, crop or pad (FITS cutouts: one "
                           "multi-extension file or cube per object)")
    prep.add_argument("--band-files", metavar="PATTERN",
                      help="one FITS per band, e.g. '{id}_{band}.fits' (relative to --cutouts); "
                           "or give a manifest CSV (id,band,sci[,rms][,weight]) as --cutouts")
    prep.add_argument("--rms-files", metavar="PATTERN",
                      help="rms maps, e.g. '{id}_{band}.rms.fits'")
    prep.add_argument("--weight-files", metavar="PATTERN",
                      help="inverse-variance maps, e.g. '{id}_{band}.wht.fits'")
    prep.add_argument("--bands", metavar="MAP",
                      help="band -> HDU name/index or cube plane, e.g. g=1,r=2,i=3 (default: "
                           "FILTER/BAND header keywords)")
    prep.add_argument("--zeropoint", type=finite_float(),
                      help="AB zero point of one unit of the pixel values (default: BUNIT, "
                           "MAGZERO/MAGZPT/PHOTZP/ZP or PHOTFLAM in the headers)")
    prep.add_argument("--pixel-scale", type=finite_float(0),
                      help="arcsec/pixel of the cutouts (default: their WCS or PIXSCALE)")
    prep.add_argument("--noise-seed", type=int_at_least(0), default=0,
                      help="mixed with each cutout id to seed its padding noise")
    return prep


def cmd_predict(args) -> int:
    from lensbench.bench.tools.predict import parse_column_map, predict_catalogue, predict_cutouts
    from lensbench.datasets.prepare import parse_band_map

    if (args.cutouts is None) == (args.catalog is None):
        raise ValueError("bench predict takes one of --cutouts (a lens-model regressor) or "
                         "--catalog (a photo-z model)")
    check_output_file(Path(args.out), "--out")
    tracking_uri = args.tracking_uri
    if tracking_uri is None and not Path(args.model).is_file():
        from lensbench.bench.tracking import default_tracking_uri

        tracking_uri = default_tracking_uri(args.workdir)
    if args.catalog is not None:
        given = [flag for flag, value in (
            ("--prepare", args.prepare), ("--band-files", args.band_files),
            ("--rms-files", args.rms_files), ("--weight-files", args.weight_files),
            ("--bands", args.bands), ("--zeropoint", args.zeropoint),
            ("--pixel-scale", args.pixel_scale), ("--noise-seed", args.noise_seed))
            if value not in (None, False, 0)]
        if given:
            raise ValueError(f"{given[0]} prepares cutouts: it goes with --cutouts, not "
                             f"--catalog")
        summary = predict_catalogue(args.model, args.catalog, args.out,
                                    columns=parse_column_map(args.columns),
                                    tracking_uri=tracking_uri, device=check_device(args.device))
        what, skipped = "galaxies", "dropped by the suite's cleaning"
    else:
        if args.columns is not None:
            raise ValueError("--columns maps catalogue columns: it goes with --catalog")
        summary = predict_cutouts(args.model, args.cutouts, args.out, tracking_uri=tracking_uri,
                                  batch_size=args.batch_size, prepare=args.prepare,
                                  band_files=args.band_files, rms_files=args.rms_files,
                                  weight_files=args.weight_files,
                                  band_map=parse_band_map(args.bands),
                                  zero_point=args.zeropoint, pixel_scale=args.pixel_scale,
                                  noise_seed=args.noise_seed, device=check_device(args.device),
                                  recursive=args.recursive)
        what, skipped = "cutouts", "bad"
    if summary.n_total and not summary.n_predicted:
        reasons = "; ".join(f"{n} x {reason}" for reason, n in summary.reasons.items())
        raise ValueError(f"none of the {summary.n_total} {what} could be predicted: {reasons}")
    extra = "".join(f", {name} {path}" for name, path in summary.files.items() if name != "out")
    metrics = "".join(f"; {key} {summary.metrics[key]:.4f}" for key in
                      ("sigma_nmad", "outlier_frac", "bias_mean") if key in summary.metrics)
    if summary.with_spec_z is not None:
        metrics = (f"; metrics on the {summary.with_spec_z} with a usable z_spec{metrics}"
                   if summary.with_spec_z else "; none has a usable z_spec (0 < z_spec <= "
                   "the model's z_max): no metrics")
    print(f"{summary.n_predicted} of {summary.n_total} {what} predicted, {summary.n_skipped} "
          f"{skipped}: {summary.out}{extra}{metrics}")
    if summary.outside_training:
        beyond = ("a magnitude or error beyond the model's training set's", "their z")
        if what == "cutouts":
            beyond = ("a parameter predicted beyond its range in the model's training set",
                      "the model")
        print(f"note: {summary.outside_training} of them have {beyond[0]} (column "
              f"outside_training names them): {beyond[1]} extrapolates", file=sys.stderr)
    _say_sky_not_subtracted(summary.sky_not_subtracted, summary.files.get("prepared"))
    _say_unread_subfolders(args, summary.layout, summary.n_total)
    return 0


def cmd_scan(args) -> int:
    from lensbench.bench.tools.scan import ScanFiles, scan
    from lensbench.datasets.prepare import parse_band_map

    check_output_file(Path(args.out), "--out")
    tracking_uri = args.tracking_uri
    if tracking_uri is None and not Path(args.model).is_file():
        from lensbench.bench.tracking import default_tracking_uri

        tracking_uri = default_tracking_uri(args.workdir)
    try:
        summary = scan(args.model, args.cutouts, args.out, batch_size=args.batch_size,
                       workers=args.workers, scheduler=args.scheduler,
                       threads_per_worker=args.threads_per_worker, tracking_uri=tracking_uri,
                       restart=args.restart, progress=not args.no_progress,
                       prepare=args.prepare, band_files=args.band_files,
                       rms_files=args.rms_files, weight_files=args.weight_files,
                       band_map=parse_band_map(args.bands), zero_point=args.zeropoint,
                       pixel_scale=args.pixel_scale, model_pixel_scale=args.model_pixel_scale,
                       noise_seed=args.noise_seed, psf_files=args.psf_files,
                       device=check_device(args.device), recursive=args.recursive)
    except KeyboardInterrupt:
        print(f"interrupted: scored cutouts are kept in {args.out}.partial; rerun the same "
              "command to resume", file=sys.stderr)
        return 130
    if (nothing := summary.nothing_scored()) is not None:
        raise ValueError(nothing)  # rc 2: the input cannot be used with this model, as a bad flag
    print(f"{summary.n_scored} of {summary.n_total} cutouts scored ({summary.layout}; "
          f"{summary.n_scored_now} now at {summary.rate:,.0f}/s), {summary.n_bad} bad "
          f"(listed in {summary.bad_file}); ranked table {summary.out}")
    _say_sky_not_subtracted(summary.sky_not_subtracted,
                            ScanFiles.for_output(args.out).prepared)
    _say_unread_subfolders(args, summary.layout, summary.n_total)
    return 0


def _say_sky_not_subtracted(n_cutouts: int, prepared) -> None:
    """Say how many prepared cutouts still hold their sky (datasets/prepare.py:
    SKY_LEVEL_LIMIT): the models were trained on sky-subtracted images."""
    from lensbench.datasets.prepare import SKY_LEVEL_LIMIT

    if n_cutouts:
        print(f"note: {n_cutouts} cutout(s) have a band whose border lies more than "
              f"{SKY_LEVEL_LIMIT:g} sky sigmas from 0 (column sky_not_subtracted of {prepared}): "
              "their sky is not subtracted, and the model was trained on sky-subtracted images",
              file=sys.stderr)


def _say_unread_subfolders(args, layout: str, n_read: int) -> None:
    """A folder of FITS cutouts is read at its top level (its ``n_read`` files): say how many
    FITS files its subfolders hold, which --recursive would have read too."""
    from lensbench.bench.tools.scan import fits_files

    if layout == "fits" and not args.recursive:
        if below := len(fits_files(args.cutouts, recursive=True)) - n_read:
            print(f"note: {below} FITS file(s) in subfolders of {args.cutouts} were not read "
                  "(--recursive reads them)", file=sys.stderr)


def cmd_degrade(args) -> int:
    from lensbench.datasets.degrade import degrade_files

    check_output_folder(args.out, "--out")
    bands = [b.strip() for b in args.bands.split(",")] if args.bands else None
    written = degrade_files(args.image, args.out, args.survey, bands,
                            pixel_scale=args.pixel_scale, zero_point=args.zeropoint,
                            arcs=args.arc, lens_lights=args.lens_light, rms=args.rms,
                            effective_gain=args.effective_gain,
                            noise_correlation=args.noise_correlation,
                            subtract_sky=args.subtract_sky, seed=args.seed,
                            stamp_size=args.stamp_size, per_band_files=args.per_band_files,
                            image_band=args.image_band, psf=args.psf, psf_scale=args.psf_scale)
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def cmd_inspect(args) -> int:
    from lensbench.bench.tools.inspect_page import merge_grades, write_page

    if args.merge is not None:
        path, graded = merge_grades(args.candidates, args.merge, out=args.out)
        print(f"{graded} graded candidates; wrote {path}")
        return 0
    out = args.out or args.candidates.with_suffix(".html")
    path = write_page(args.candidates, out, top=args.top or None, per_page=args.per_page)
    print(f"wrote {path}: open it in a browser, grade with A/B/C/N, export with E")
    return 0


SUITE_HELP = f"one of: {', '.join(SUITES)} (`bench list` describes them)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="lensbench: strong-lensing ML "
                                     "benchmarks with the field's figures of merit")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite: simulate splits, fit, score, track")
    run.add_argument("--suite", required=True, metavar="SUITE", help=SUITE_HELP)
    run.add_argument("--profile", default="default", choices=PROFILES)
    run.add_argument("--seed", type=int, default=0, help="derives every method seed")
    run.add_argument("--methods", help="comma-separated method names (default: the suite's)")
    run.add_argument("--tasks", metavar="NAMES",
                     help="comma-separated task names or suffixes, e.g. real-vis or vis "
                          "(default: every task of the suite)")
    run.add_argument("--variants", metavar="NAMES",
                     help="design suite: comma-separated training-set variants (default: the "
                          "profile's; reports/design.md lists them)")
    run.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE",
                     help="set a method hyper-parameter (repeatable)")
    run.add_argument("--params", type=Path, metavar="FILE",
                     help="JSON {method: {param: value}}, e.g. bench tune's best_params.json")
    run.add_argument("--resume", action="store_true",
                     help="skip runs already done on the same splits with the same params")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                     "or a SQLite store in the workdir)")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.add_argument("--strict", action="store_true", help="exit 1 if any method failed")
    _add_cluster(run, "the splits' shards are simulated and every (method, task) run is a task "
                 "on the workers; the workdir must be at the same path on every worker")
    _add_workdir(run)
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="tune a method with Optuna on the validation split")
    tune.add_argument("--suite", required=True, metavar="SUITE", help=SUITE_HELP)
    tune.add_argument("--task", required=True, help="task name or suffix, e.g. ground")
    tune.add_argument("--method", required=True)
    tune.add_argument("--metric", help="the validation metric to optimise, its direction taken "
                      "from the task's kind (default: the kind's, e.g. auroc for lens finding, "
                      "sigma_nmad for photo-z, theta_e/half_width_68 for modeling)")
    tune.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE",
                      help="fix a hyper-parameter in every trial, out of the search (repeatable)")
    tune.add_argument("--trials", type=int, default=20, help="finished trials the study should "
                      "hold; a rerun resumes up to this number")
    tune.add_argument("--timeout", type=float, help="seconds for this invocation")
    tune.add_argument("--study", help="study name (default suite.task.method.profile)")
    tune.add_argument("--storage", help="Optuna RDB URL, e.g. postgresql://user@host/db "
                      "(default: a journal file in the workdir)")
    tune.add_argument("--n-jobs", type=int, default=1, help="parallel trials in this process")
    tune.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
    tune.add_argument("--profile", default="default", choices=PROFILES)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--tracking-uri")
    tune.add_argument("--no-tracking", action="store_true")
    _add_workdir(tune)
    tune.set_defaults(func=cmd_tune)

    lst = sub.add_parser("list", help="suites, tasks and methods")
    lst.set_defaults(func=cmd_list)

    report = sub.add_parser("report", help="write reports/<suite>.md and .html from results")
    report.add_argument("--suite", metavar="SUITE", help=SUITE_HELP)
    report.add_argument("--profile", default="default", choices=PROFILES)
    report.add_argument("--seed", type=int, help="the suite seed whose runs to report "
                        "(default: the only one the store holds)")
    report.add_argument("--out", type=Path, default=Path("reports"))
    report.add_argument("--check", action="store_true",
                        help="write nothing: list the reports in --out made from splits the "
                             "current code no longer makes (exit 1 if any)")
    _add_workdir(report)
    report.set_defaults(func=cmd_report)

    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    _add_workdir(ui)
    ui.set_defaults(func=cmd_ui)

    data = sub.add_parser("data", help="make or look at a dataset split")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="simulate a split to HDF5 shards + manifest")
    make.add_argument("--preset", required=True, help="survey preset, e.g. hsc, kids, lsst-10yr")
    make.add_argument("--n", type=int_at_least(1), required=True)
    make.add_argument("--seed", type=int_at_least(0), required=True)
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a SimConfig field, e.g. --set labelling=clean")
    make.add_argument("--config", type=Path, metavar="FILE",
                      help="JSON object of SimConfig fields, e.g. {\"negatives\": {\"ring\": "
                           "0.5, \"elliptical\": 0.5}, \"source_model\": \"mix\"}")
    make.add_argument("--negatives", metavar="CLASS=FRAC,...",
                      help="shares of non-lens classes (elliptical, spiral, ring, merger, "
                           "group, edge-on, cosmos, artefact), summing to 1")
    make.add_argument("--source-model", choices=("sersic", "cosmos", "mix"),
                      help="lensed sources: analytic Sersic, real COSMOS galaxies, or a mix "
                           "(share: --set cosmos_fraction=F)")
    make.add_argument("--device", default="cpu",
                      help="where to render: cpu, cuda (same truth and noise; pixels equal to "
                           "float32 rounding, so the split's hash is the CPU's only on the CPU)")
    _add_cluster(make, "the shards are simulated on the workers; the folder of --out must be "
                 "at the same path on every worker")
    make.set_defaults(func=cmd_data_make)
    show = data_sub.add_parser("show", help="draw a labelled gallery of colour composites")
    show.add_argument("split", type=Path)
    show.add_argument("--out", type=Path, required=True)
    show.add_argument("--n", type=int_at_least(1), default=32)
    show.add_argument("--ncols", type=int_at_least(1), default=8)
    show.add_argument("--per-class", type=int_at_least(1), default=6,
                      help="cutouts per class when the split names its non-lens classes")
    show.set_defaults(func=cmd_data_show)
    probe = data_sub.add_parser("probe", help="whether this machine's CPU makes the reports' "
                                "split bytes (simulates 8 systems)")
    probe.set_defaults(func=cmd_data_probe)

    perf = sub.add_parser("perf", help="throughput benchmarks")
    perf_sub = perf.add_subparsers(dest="perf_command", required=True)
    sim = perf_sub.add_parser("sim", help="simulator vs lenstronomy, band-images per second")
    sim.add_argument("--n", type=int, default=2048, help="systems for lensbench")
    sim.add_argument("--lenstronomy-n", type=int, default=64, help="systems for lenstronomy")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--device", default="cpu", help="where lensbench renders: cpu, cuda")
    sim.set_defaults(func=cmd_perf_sim)
    gpu = perf_sub.add_parser("gpu", help="committee vs DeepLens (published schedule) on one "
                              "device, timed: reports/metcalf-compare-gpu.md")
    gpu.add_argument("--profile", choices=("compare", "smoke"), default="compare",
                     help="compare: the compare profile's splits and committee, DeepLens for "
                          "120 epochs; smoke: tiny, to check the command on a CPU")
    gpu.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda, cpu")
    gpu.add_argument("--seed", type=int_at_least(0), default=0)
    gpu.add_argument("--methods", nargs="+", default=["deeplens", "committee"],
                     choices=("committee", "deeplens"), help="run in this order")
    gpu.add_argument("--speed-epochs", type=int_at_least(0), default=None,
                     help="epochs of the short runs that time bf16 autocast and channels-last "
                          "against float32 / contiguous (default 3, smoke 1; 0: skip them)")
    gpu.add_argument("--together", choices=("auto", "yes", "no"), default=None,
                     help="train DeepLens and the committee at the same time, each in its own "
                          "process on the device: yes, no, or auto (default: where the short "
                          "runs measure it under 90%% of the time one after the other)")
    gpu.add_argument("--out", type=Path, default=None,
                     help="the report (default reports/metcalf-compare-gpu.md)")
    _add_workdir(gpu)
    gpu.set_defaults(func=cmd_perf_gpu)

    scan = sub.add_parser("scan", help="score real cutouts with any saved lens finder and "
                          "rank them (resumable; Dask for scale-out)")
    scan.add_argument("--model", required=True,
                      help="a model file (model.lbmodel, any saved finder), a bare torch "
                           "checkpoint (*.pt, with --model-pixel-scale), or an MLflow run id "
                           "whose model artefact is used")
    scan.add_argument("--cutouts", type=Path, required=True,
                      help="a folder of FITS cutouts (one (B, H, W) file per object, or the "
                           "Metcalf layout) or a split directory (HDF5 shards + manifest)")
    scan.add_argument("--out", type=Path, required=True, help="the ranked CSV to write")
    scan.add_argument("--batch-size", type=int_at_least(1), default=512)
    scan.add_argument("--workers", type=int_at_least(1), default=1,
                      help="> 1: a local Dask cluster of this many worker processes")
    scan.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address,
                      help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (the cutouts "
                           "must be readable by every worker at the same path)")
    scan.add_argument("--threads-per-worker", type=int_at_least(1), default=1)
    scan.add_argument("--device", default="auto", help=DEVICE_HELP)
    scan.add_argument("--restart", action="store_true",
                      help="discard an unfinished scan of OUT instead of resuming it")
    scan.add_argument("--no-progress", action="store_true")
    scan.add_argument("--tracking-uri", help="MLflow store of the run id (default: "
                      "$MLFLOW_TRACKING_URI or the workdir's)")
    scan.add_argument("--recursive", action="store_true", help=RECURSIVE_HELP)
    prep = _add_preparation(scan)
    prep.add_argument("--psf-files", metavar="PATTERN",
                      help="PSF images, e.g. '{id}_{band}.psf.fits': their FWHM is recorded "
                           "beside the model's training PSF (not matched)")
    prep.add_argument("--model-pixel-scale", type=finite_float(0),
                      help="arcsec/pixel the model was trained at, for a bare torch checkpoint "
                           "(a model file says it)")
    _add_workdir(scan)
    scan.set_defaults(func=cmd_scan)

    predict = sub.add_parser("predict", help="apply a saved model to your own data: lens-model "
                             "parameters of real cutouts, photo-z of a catalogue")
    predict.add_argument("--model", required=True,
                         help="a model file (model.lbmodel of a run), or an MLflow run id "
                              "whose model artefact is used")
    predict.add_argument("--cutouts", type=Path,
                         help="for a lens-model regressor: cutouts as bench scan reads them")
    predict.add_argument("--catalog", type=Path,
                         help="for a photo-z model: a CSV or FITS table")
    predict.add_argument("--columns", metavar="MAP",
                         help="catalogue columns of the model's inputs, e.g. u=MAG_U,...,"
                              "err_u=MAGERR_U,... (optional id=, z_spec= for the spectroscopic z; "
                              "default: the model's names mag_<band>, err_<band>)")
    predict.add_argument("--out", type=Path, required=True, help="the CSV to write")
    predict.add_argument("--batch-size", type=int_at_least(1), default=256)
    predict.add_argument("--tracking-uri", help="MLflow store of the run id (default: "
                         "$MLFLOW_TRACKING_URI or the workdir's)")
    predict.add_argument("--device", default="auto", help=DEVICE_HELP)
    predict.add_argument("--recursive", action="store_true", help=RECURSIVE_HELP)
    _add_preparation(predict)
    _add_workdir(predict)
    predict.set_defaults(func=cmd_predict)

    degrade = sub.add_parser("degrade", help="render high-resolution images (HST) as a survey "
                             "preset observes them, as the real suite does for SLACS")
    degrade.add_argument("--image", action="append", required=True, metavar="FITS",
                         help="a sky-subtracted high-resolution image centred on the object; "
                              "repeat for several (one noise generator, in order)")
    degrade.add_argument("--pixel-scale", type=finite_float(0),
                         help="arcsec/pixel of the images (default: their WCS)")
    degrade.add_argument("--zeropoint", type=finite_float(),
                         help="AB zero point of one unit of the image values (default: BUNIT, "
                              "MAGZERO/PHOTZP/... or PHOTFLAM in the header)")
    degrade.add_argument("--survey", required=True, help="a survey preset (hsc, lsst-10yr, ...)")
    degrade.add_argument("--bands", help="comma-separated bands (default: all of the preset)")
    degrade.add_argument("--stamp-size", type=int_at_least(8),
                         help="output side in pixels (default: the preset's)")
    degrade.add_argument("--arc", action="append", metavar="FITS",
                         help="the arc light of each image (source colours); once per --image")
    degrade.add_argument("--lens-light", action="append", metavar="FITS",
                         help="the lens light of each image (lens colours); once per --image")
    degrade.add_argument("--rms", action="append", type=finite_float(),
                         help="the image's own per-pixel noise sigma, once per --image "
                              "(default: measured on its border)")
    degrade.add_argument("--effective-gain", action="append", type=finite_float(0),
                         help="electrons per unit of the image's values (an image in e-/s: its "
                              "exposure in s), once per --image: its own photon noise then "
                              "counts beside --rms, which is the sky's (default: none counted; "
                              "near a bright object that can make the output too noisy)")
    degrade.add_argument("--noise-correlation", action="append", type=number_or_path,
                         metavar="FACTOR|FITS",
                         help="the image's noise correlation, once per --image: a FITS image of "
                              "its correlation at each pixel lag (odd square, centred; e.g. a "
                              "GalSim correlation function), carried exactly through the "
                              "degradation, or the factor its degraded variance has over white "
                              "noise's (default: measured on its border, neighbours only)")
    degrade.add_argument("--subtract-sky", action="store_true",
                         help="subtract the median of the image border first")
    degrade.add_argument("--image-band", default="i",
                         help="the survey band the image's filter stands for (default i: F814W)")
    degrade.add_argument("--psf", type=Path, metavar="FITS",
                         help="the images' own PSF: matched to the survey's instead of blurred "
                              "by it a second time (the real suite uses HST ACS F814W's)")
    degrade.add_argument("--psf-scale", type=finite_float(0),
                         help="arcsec/pixel of --psf (default: the images')")
    degrade.add_argument("--seed", type=int_at_least(0), default=0)
    degrade.add_argument("--per-band-files", action="store_true",
                         help="one science and one rms FITS per band instead of one cube")
    degrade.add_argument("--out", type=Path, required=True, help="folder to write in")
    degrade.set_defaults(func=cmd_degrade)

    inspect = sub.add_parser("inspect", help="grade scan candidates by eye in an HTML page, "
                             "or merge the exported grades into the table")
    inspect.add_argument("candidates", type=Path, help="the ranked CSV of `bench scan`")
    inspect.add_argument("--out", type=Path,
                         help="the page (default CANDIDATES.html); with --merge, where the "
                              "graded table goes (default: CANDIDATES itself)")
    inspect.add_argument("--merge", type=Path, metavar="GRADES_CSV",
                         help="add the grades exported from the page as a grade column")
    inspect.add_argument("--top", type=int_at_least(0), default=500,
                         help="best-ranked candidates on the page (0: all)")
    inspect.add_argument("--per-page", type=int_at_least(1), default=48)
    inspect.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return args.func(args)
    except KeyboardInterrupt:  # commands with something to say on it (run, scan) catch it
        print("bench: interrupted", file=sys.stderr)
        return 130
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"bench: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
