"""Suite kinds: everything that differs between lens finding, lens modeling, photo-z and the
design study, in one small object per kind (bench/suites/<kind>.py).

The one suite loop (:func:`lensbench.bench.runner.run_suite`), the report writer
(:func:`lensbench.bench.report.write_report`) and the tuner (:func:`lensbench.bench.tune.tune`)
know no kind: they look up the kind a task names (``Task.kind``) here and ask it

- how a task's splits are obtained (``splits``: simulated, a real catalogue, real lenses) and
  which runs a task holds (``cases``: one per method, or per method and training-set variant);
- the TaskInfo handed to methods (``task_info``) and their training data (``training_data``);
- how a fitted method's predictions become metrics (``evaluate``), which way each metric is
  better (``metric_directions``) and the one tuning optimises by default (``tune_metric``);
- what a tuning study sees: a fit part and a validation part, never the test part
  (``study_data``, ``validation_metrics``);
- the run's summary line, its artefacts, and its section of the report with figures.

Like benchopt's Objective (``set_data`` / ``evaluate_result``) and lm-evaluation-harness's Task
(training / validation / test docs, ``process_results``, ``higher_is_better``), but the kind is
stateless: the data of one task travel in the ``splits`` object it returns.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.bench.results import Result, canonical_run_id
from lensbench.bench.tasks import Suite, Task

MAXIMIZE, MINIMIZE = "maximize", "minimize"

# task kind -> the class that implements it, imported only when a suite of that kind runs.
KINDS = {
    "lens-finding": "lensbench.bench.suites.lens_finding:LensFinding",
    "modeling": "lensbench.bench.suites.modeling:Modeling",
    "photoz": "lensbench.bench.suites.photoz:Photoz",
    "design": "lensbench.bench.suites.design:Design",
}


@dataclass
class RunCase:
    """One run of the suite loop: a method, the parameters it is built with and the splits it
    is fitted and scored on. ``record_params`` is what the Result records (the parameters, plus
    what the kind adds, e.g. the design variant); ``declined`` a reason the kind gives not to
    build the method at all."""

    method: str
    params: dict
    task: Task  # the task the method sees (the design study: the variant's training task)
    splits: Any
    split_hashes: dict[str, str]
    n_train: int
    n_test: int
    data_files: dict = field(default_factory=dict)
    run_id: str = ""
    record_params: dict | None = None
    declined: str | None = None

    def __post_init__(self):
        if not self.run_id:
            self.run_id = canonical_run_id(self.method, self.params)
        if self.record_params is None:
            self.record_params = dict(self.params)


@dataclass
class Evaluation:
    """What a kind measured of one fitted method: flat metrics, the time the test predictions
    took, and the predictions its artefacts are made of."""

    metrics: dict[str, float]
    predict_time_s: float
    predictions: dict = field(default_factory=dict)


@dataclass
class StudyData:
    """What a tuning study sees of a task: the part methods are fitted on and the validation
    part they are judged on. There is no test part: a study never reads it."""

    info: TaskInfo
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    fit_kwargs: dict = field(default_factory=dict)  # passed when the method's fit takes them


class SuiteKind:
    """The base of every kind; subclasses live in bench/suites/."""

    name: str = ""
    metric_directions: dict[str, str] = {}
    tune_metric: str = ""
    report_title = "leaderboard"
    seed_note = " (every method seed derives from it)"

    # ------------------------------------------------------------------ data and runs
    def splits(self, task: Task, profile: str, workdir: Path, log=print) -> Any:
        raise NotImplementedError

    def n_cases(self, task: Task, methods: list[str], profile: str) -> int:
        """How many runs ``cases`` will yield for the task (known before any split is made)."""
        return len(methods)

    def cases(self, suite: Suite, task: Task, splits: Any, methods: list[str],
              params: dict[str, dict], profile: str, workdir: Path) -> Iterator[RunCase]:
        """The runs of one task: each method with the suite's parameters for the profile,
        then the user's (``params``)."""
        for name in methods:
            yield self.case(name, {**suite.params_for(profile, task).get(name, {}),
                                   **params.get(name, {})}, task, splits)

    def case(self, name: str, params: dict, task: Task, splits: Any) -> RunCase:
        raise NotImplementedError

    def task_info(self, task: Task, splits: Any) -> TaskInfo:
        raise NotImplementedError

    def training_data(self, task: Task, splits: Any) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def contract_details(self, task: Task, splits: Any) -> dict:
        """What a saved model's contract says of its inputs beyond the TaskInfo
        (:func:`lensbench.baselines.persistence.make_contract` keywords): ``preprocessing`` of
        the images (by default: sky-subtracted, as the survey preset renders them) or the
        catalogue ``columns`` and their cleaning."""
        info = self.task_info(task, splits)
        preprocessing = {"sky_subtracted": True}
        if info.survey is not None:
            from lensbench.datasets.surveys import get_survey

            survey = get_survey(info.survey)
            bands = {band.name: band for band in survey.bands}
            preprocessing |= {
                "survey": info.survey, "psf_model": survey.psf_model,
                "psf_fwhm_arcsec": {b: float(bands[b].psf_fwhm) for b in info.bands
                                    if b in bands},
                "sky_sigma_nanomaggies": {
                    b: float(bands[b].background_sigma / bands[b].electrons_per_nanomaggy)
                    for b in info.bands if b in bands}}
        return {"preprocessing": preprocessing}

    def fit_kwargs(self, accepted, splits: Any) -> dict:
        """Extra keyword arguments of ``fit`` the kind offers (``accepted``: the names the
        method's fit takes), e.g. a validation part."""
        return {}

    def evaluate(self, method, task: Task, splits: Any, name: str) -> Evaluation:
        raise NotImplementedError

    def write_artifacts(self, result: Result, evaluation: Evaluation, task: Task, splits: Any,
                        folder: Path) -> dict[str, Path]:
        return {}

    def summary_line(self, result: Result) -> str:
        return f"{result.run_id:>24} on {result.task}: {result.status.upper()} " \
               f"{result.error_line}"

    # ------------------------------------------------------------------ tuning
    def direction(self, metric: str) -> str:
        """MAXIMIZE or MINIMIZE for ``metric``; an unknown metric names the kind's."""
        if metric not in self.metric_directions:
            close = difflib.get_close_matches(metric, list(self.metric_directions), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"the {self.name} kind has no metric {metric!r}.{hint} Its metrics: "
                           f"{', '.join(self.metric_directions)}")
        return self.metric_directions[metric]

    def study_data(self, task: Task, profile: str, workdir: Path, seed: int) -> StudyData:
        raise NotImplementedError

    def validation_metrics(self, method, study: StudyData) -> dict[str, float]:
        raise NotImplementedError

    # ------------------------------------------------------------------ report
    def report_notes(self, suite: Suite, profile: str) -> list[str]:
        """The report's lines after the provenance: how to read the tables."""
        return [""]

    def provenance_results(self, results: list[Result]) -> list[Result]:
        """The results as the report's "produced by" command should see them."""
        return results

    def report_section(self, suite: Suite, task: Task, results: list[Result], *, workdir: Path,
                       out_dir: Path, stem: str, profile: str) -> tuple[list[str], list[Path]]:
        """The Markdown lines and figures of one task (``results``: its latest records)."""
        raise NotImplementedError


def get_kind(name: str) -> SuiteKind:
    """The kind named ``name`` (a task's ``kind``)."""
    if name not in KINDS:
        close = difflib.get_close_matches(name, list(KINDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task kind {name!r}.{hint} Known kinds: {', '.join(KINDS)}")
    module, cls = KINDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def kind_of(suite: Suite) -> SuiteKind:
    """The kind of a suite's tasks (a suite mixes no kinds)."""
    kinds = {task.kind for task in suite.tasks}
    if len(kinds) != 1:
        raise ValueError(f"suite {suite.name!r} must hold tasks of one kind; it has "
                         f"{sorted(kinds) or 'no tasks'}")
    return get_kind(kinds.pop())
