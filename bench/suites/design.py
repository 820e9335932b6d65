"""The design-study kind (issue 11): which training-set choices matter for a lens finder?

One method (the default CPU network, the committee, unless ``--methods`` names others) is trained
on variants of the training set, one choice changed at a time against a baseline, and every
variant is scored on the SAME fixed test sets: the design task's simulated test set (HSC g,r,i,z,y
64x64 with the hsc-holismokes mix, drawn once by its own seed) and its split of real known lenses.

A variant is frozen data (:class:`Variant`): SimConfig overrides of its training split, the bands
the method sees, method params (the stretch) and whether the lens light is subtracted from every
image the method sees (:func:`lensbench.baselines.lenslight.subtract_lens_light`). Each training
split is keyed by the hash of its config, so variants that change only the bands or the
preprocessing train on the baseline's very images: those comparisons are paired, and the
simulated objects differ only where the simulation does. A method trained on a band subset sees
the test images (and the real lenses) restricted to those bands (:class:`SplitView`). The method
seed is the same for every variant, so only the training data (or its view) changes.

Each (method, variant) is one Result record, run id ``method[variant=NAME]``, and one MLflow run
tagged ``lensbench.variant``. `bench report --suite design` writes reports/design.md: variants x
(AUROC, TPR0, TPR10, TPR at FPR 1e-3, known lenses recovered at FPR 1e-3), the changes against the
baseline with paired-bootstrap intervals, a figure, and a statement generated from those numbers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import RunCase
from lensbench.bench.report import fmt
from lensbench.bench.results import Result, canonical_run_id
from lensbench.bench.splits import ensure_real_lens_split, ensure_split
from lensbench.bench.statistics import BOOTSTRAP_RESAMPLES, change_text, paired_bootstrap
from lensbench.bench.suites.lens_finding import ROTATION_COLUMNS, LensFinding, LensFindingSplits
from lensbench.bench.suites.real_diagnosis import stored_test_scores
from lensbench.bench.tasks import (
    FIELD_GALAXIES,
    LENS_ENVIRONMENT,
    LENS_ISOPHOTES,
    LENS_POPULATION,
    Suite,
    Task,
)
from lensbench.datasets.config import SimConfig

BASELINE = "baseline"
BASE_BANDS = ("g", "r", "i", "z")  # the hsc-holismokes bands: what the baseline trains on
# Hard negatives boosted: rings, mergers, groups, edge-on disks and spirals (the false positives
# of Canameras et al. 2021) at 80% of the non-lenses instead of 55%.
BOOSTED_NEGATIVES = {"elliptical": 0.10, "spiral": 0.15, "ring": 0.20, "merger": 0.15,
                     "group": 0.15, "edge-on": 0.15, "cosmos": 0.05, "artefact": 0.05}
# Random galaxies only: the lens population without a source and real COSMOS field galaxies.
RANDOM_NEGATIVES = {"elliptical": 0.5, "cosmos": 0.5}
# Test cutouts scored under the 8 dihedral transforms for the rotation columns: fewer than the
# other suites' 1000, as every variant pays for them (~10 s per 100 cutouts for the committee).
ROTATION_SUBSET = 400


@dataclass(frozen=True)
class Variant:
    """One training-set design: what differs from the baseline, as data."""

    name: str
    choice: str  # the design choice it varies (variants of one choice are compared together)
    description: str
    train: dict = field(default_factory=dict)  # SimConfig overrides of the training split
    bands: tuple[str, ...] = BASE_BANDS  # the bands the method sees (train, test, real)
    method_params: dict = field(default_factory=dict)  # e.g. {"stretch": "sqrt"}
    # Subtract the lens light from every image the method sees, its model's shape measured by
    # round-"weighted" or "adaptive" moments (baselines/arcfinder.py: SHAPES); None: keep it.
    lens_light: str | None = None

    def train_config(self, base: SimConfig) -> SimConfig:
        return base.replace(**self.train)

    def record(self) -> dict:
        """What a Result's params (and so MLflow's) say about the variant."""
        return {"variant": self.name, "variant_choice": self.choice,
                "variant_train": json.dumps(self.train, sort_keys=True),
                "variant_bands": ",".join(self.bands), "variant_lens_light": self.lens_light}


VARIANTS = (
    Variant(BASELINE, "baseline", "the hsc-holismokes training set: natural theta_E, the HSC "
            "negative mix, natural doubles/quads, clean labels (mu >= 3, arc S/N >= 10), half "
            "COSMOS sources; g,r,i,z; asinh stretch"),
    Variant("flat-theta", "theta_E distribution", "theta_E uniform in 0.5-3\" instead of the "
            "natural distribution (velocity function x lensing cross-section)",
            train={"theta_e_distribution": "flat"}),
    Variant("negatives-random", "negatives", "non-lenses are random galaxies only: half the lens "
            "population without a source, half real COSMOS field galaxies; no hard negatives",
            train={"negatives": RANDOM_NEGATIVES}),
    Variant("negatives-hard", "negatives", "hard negatives boosted: rings 20%, mergers, groups, "
            "edge-on disks and spirals 15% each (80% of the non-lenses, 55% in the baseline)",
            train={"negatives": BOOSTED_NEGATIVES}),
    Variant("quads-half", "doubles/quads", "half the lenses quads (source positions re-drawn "
            "until each system is a quad or not as chosen) instead of the natural mix",
            train={"quad_fraction": 0.5}),
    Variant("labels-metcalf", "labels", "Metcalf et al. (2019) labels: any lensed source is a "
            "lens, no cut on magnification or arc S/N", train={"labelling": "metcalf"}),
    Variant("sources-sersic", "source model", "analytic Sersic sources with clumps only",
            train={"source_model": "sersic"}),
    Variant("sources-cosmos", "source model", "real HST COSMOS sources only",
            train={"source_model": "cosmos"}),
    Variant("bands-gri", "bands", "g,r,i only (training, test and real images)",
            bands=("g", "r", "i")),
    Variant("bands-grizy", "bands", "g,r,i,z,y (training, test and real images)",
            bands=("g", "r", "i", "z", "y")),
    Variant("stretch-none", "preprocessing", "no stretch: noise-normalised linear pixels",
            method_params={"stretch": "none"}),
    Variant("stretch-sqrt", "preprocessing", "square-root stretch (Canameras et al. 2020)",
            method_params={"stretch": "sqrt"}),
    Variant("lens-light", "preprocessing", "lens light subtracted from every band (the arc "
            "finder's smooth elliptical model of the i band, scaled by each band's colour)",
            lens_light="weighted"),
    # Issue 22.2: the lens population of the real lenses' kind (bench/tasks.py:
    # LENS_POPULATION), one change at a time and both.
    Variant("lenses-low-z", "lens population", "lens redshifts 0.1-0.9 instead of 0.2-0.9: "
            "bright low-redshift massive ellipticals like the SLACS lenses",
            train={"z_lens_range": LENS_POPULATION["z_lens_range"]}),
    Variant("lens-sizes", "lens population", "lens half-light radii from the early-type "
            "size-luminosity relation (Shen et al. 2003) at each lens's redshift instead of "
            "uniform in 0.5-2\"", train={"lens_size": LENS_POPULATION["lens_size"]}),
    Variant("lens-population", "lens population", "both: lenses at z 0.1-0.9 sized by "
            "luminosity (the population of hsc-holismokes v3 and the real tasks)",
            train=dict(LENS_POPULATION)),
    # The issue-22 lens population with the preprocessing change of the largest gain on the
    # simulated test set (lens-light).
    Variant("lens-population-light", "lens population", "lens-population with the lens light "
            "subtracted from every image (as lens-light)", train=dict(LENS_POPULATION),
            lens_light="weighted"),
    # Issue 22.2: neighbours in every training cutout, lens or not (bench/tasks.py:
    # FIELD_GALAXIES), on top of the adopted lens-population-light.
    Variant("field-galaxies", "field galaxies", "lens-population-light with field galaxies in "
            "every cutout (~40 per arcmin^2 with i 18-25, uniform over the stamp): lenses are "
            "no longer alone in their stamps while groups and mergers carry neighbours",
            train={**LENS_POPULATION, **FIELD_GALAXIES}, lens_light="weighted"),
    # The lens-light model's shape from adaptive moments instead of round-weighted ones: the
    # round weight measured simulated lenses' axis ratios 0.13 too round in VIS and left
    # four-lobed residuals (baselines/arcfinder.py: adaptive_moments).
    Variant("lens-light-adaptive", "field galaxies", "field-galaxies with the lens-light model's "
            "centre and shape from adaptive moments",
            train={**LENS_POPULATION, **FIELD_GALAXIES}, lens_light="adaptive"),
    # Issue 22, cause 7: the real cutouts carry the HST images' own noise, degraded and so
    # correlated on the PSF scale (HSC i: 0.16-0.42 sky sigma; VIS 0.5-1.3, real-vis v4).
    Variant("correlated-noise", "noise", "field-galaxies with PSF-correlated noise in the "
            "training cutouts (rms uniform in 0-0.5 sky sigma, the variance per pixel kept)",
            train={**LENS_POPULATION, **FIELD_GALAXIES, "correlated_noise": 0.5},
            lens_light="weighted"),
    # Issue 22, the real lens light: early types whose isophotes twist, change axis ratio with
    # radius and are boxy or discy (bench/tasks.py: LENS_ISOPHOTES), lenses and ellipticals alike.
    Variant("lens-isophotes", "lens light", "field-galaxies with the early types' isophotes "
            "twisting (+-20 deg), changing axis ratio (+-0.15) from centre to outskirts and "
            "boxy or discy (a4/a -0.02..0.03)",
            train={**LENS_POPULATION, **FIELD_GALAXIES, **LENS_ISOPHOTES},
            lens_light="weighted"),
    # Issue 22, cause 11: companions only around group non-lenses taught "companion: not a lens"
    # (bench/tasks.py: LENS_ENVIRONMENT); lenses get a group's companions as often.
    Variant("lens-companions", "lens environment", "lens-isophotes with a group's companions "
            "(2-4 early types 0.3-2 mag fainter) around 10% of the lenses, as often as a "
            "non-lens is a group",
            train={**LENS_POPULATION, **FIELD_GALAXIES, **LENS_ISOPHOTES, **LENS_ENVIRONMENT},
            lens_light="weighted"),
)
VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}
# The smoke profile runs one variant of each mechanism: a simulation override, a band subset, a
# method param and the lens-light view.
PROFILE_VARIANTS = {"smoke": (BASELINE, "flat-theta", "bands-gri", "stretch-sqrt", "lens-light")}


def variants_for(profile: str, names: tuple[str, ...] | None = None) -> tuple[Variant, ...]:
    """The variants a run trains: ``names`` (`bench run --variants`), else the profile's."""
    names = names or PROFILE_VARIANTS.get(profile)
    if names is None:
        return VARIANTS
    unknown = [name for name in names if name not in VARIANTS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown design variant(s) {', '.join(unknown)}; variants: "
                         f"{', '.join(VARIANTS_BY_NAME)}")
    return tuple(VARIANTS_BY_NAME[name] for name in names)


class SplitView:
    """A split as one variant's method sees it: a subset of its bands and an optional image
    transform (lens-light subtraction). Everything else (truth, hashes, manifest) is the split's,
    so the test hash recorded for every variant is that of the one test split."""

    def __init__(self, split, bands: tuple[str, ...],
                 transform: Callable[[np.ndarray], np.ndarray] | None = None):
        missing = [band for band in bands if band not in split.bands]
        if missing:
            raise ValueError(f"bands {missing} are not in the split's {split.bands}")
        self.split = split
        self._index = [split.bands.index(band) for band in bands]
        self._bands = list(bands)
        self.transform = transform
        self.truth, self.manifest, self.path = split.truth, split.manifest, split.path

    n = property(lambda self: self.split.n)
    content_hash = property(lambda self: self.split.content_hash)
    bands = property(lambda self: list(self._bands))
    image_shape = property(lambda self: (len(self._bands), *self.split.image_shape[1:]))

    def __len__(self) -> int:
        return self.n

    def images(self, indices=None) -> np.ndarray:
        images = self.split.images(indices)[:, self._index]
        return images if self.transform is None else self.transform(images)


def _view(split, variant: Variant, pixel_scale: float) -> SplitView:
    from lensbench.baselines.lenslight import subtract_lens_light

    transform = (partial(subtract_lens_light, bands=variant.bands, pixel_scale=pixel_scale,
                         shape=variant.lens_light) if variant.lens_light else None)
    return SplitView(split, variant.bands, transform)


@dataclass
class DesignSplits:
    """The design task's fixed test split and real lenses; each variant adds its training
    split (``Design.cases``)."""

    finder_task: Task  # the task as the methods see it: lens finding
    test: object
    real: object | None
    pixel_scale: float


class Design(LensFinding):
    """Lens finding on variants of the training set: one run per (method, variant), all scored
    on the task's one test split and its real-lens split."""

    name = "design"
    rotation_subset = ROTATION_SUBSET
    report_title = "design study"
    seed_note = ""

    def splits(self, task: Task, profile: str, workdir: Path, log=print) -> DesignSplits:
        from lensbench.datasets.surveys import get_survey

        # The methods see a lens-finding task (the kind "design" is the study around them).
        finder_task = dataclasses.replace(task, kind=self.info_kind)
        test = ensure_split(finder_task, "test", profile, workdir)
        real = ensure_real_lens_split(task, workdir) if task.real_lenses else None
        return DesignSplits(finder_task, test, real, get_survey(task.config.survey).pixel_scale)

    def n_cases(self, task: Task, methods: list[str], profile: str) -> int:
        return len(variants_for(profile, task.variants)) * len(methods)

    def cases(self, suite: Suite, task: Task, splits: DesignSplits, methods: list[str],
              params: dict[str, dict], profile: str, workdir: Path):
        """Every method on every variant of the profile's training set. The run id names the
        user's parameters and the variant; the record adds what the variant is."""
        test, real = splits.test, splits.real
        for variant in variants_for(profile, task.variants):
            train_task = dataclasses.replace(splits.finder_task,
                                             config=variant.train_config(task.config))
            train = ensure_split(train_task, "train", profile, workdir)
            views = LensFindingSplits(
                *(_view(s, variant, splits.pixel_scale) if s is not None else None
                  for s in (train, test, real)))
            hashes = {"train": train.content_hash, "test": test.content_hash,
                      **({"real": real.content_hash} if real is not None else {})}
            for name in methods:
                method_params = {**suite.params_for(profile, task).get(name, {}),
                                 **params.get(name, {}), **variant.method_params}
                unknown = sorted(set(variant.method_params)
                                 - set(resolve_method(name)().get_params()))
                yield RunCase(
                    name, method_params, train_task, views, hashes, train.n, test.n,
                    views.data_files,
                    run_id=canonical_run_id(name, {**params.get(name, {}),
                                                   "variant": variant.name}),
                    record_params={**method_params, **variant.record()},
                    declined=(f"{name} has no parameter {', '.join(unknown)}, which variant "
                              f"{variant.name} sets") if unknown else None)

    def study_train_split(self, task: Task, profile: str, workdir: Path):
        """The baseline variant's training split, as the baseline's methods see it."""
        from lensbench.datasets.surveys import get_survey

        baseline = VARIANTS_BY_NAME[BASELINE]
        finder_task = dataclasses.replace(task, kind=self.info_kind,
                                          config=baseline.train_config(task.config))
        train = ensure_split(finder_task, "train", profile, workdir)
        return _view(train, baseline, get_survey(task.config.survey).pixel_scale)

    def provenance_results(self, results: list[Result]) -> list[Result]:
        return [without_variant_params(r) for r in results]

    def report_notes(self, suite: Suite, profile: str) -> list[str]:
        task = suite.tasks[0]
        return [f"- {task.description}. One test set for every variant, drawn once (seed "
                f"{task.test_seed}); the real known lenses (SLACS degraded to HSC g,r,i,z,y) are "
                "scored against the threshold that gives FPR 1e-3 on it. A variant trained on a "
                "band subset sees the test and real images in those bands; a lens-light variant "
                "sees them with the lens light subtracted.",
                "- Each variant changes one choice of the baseline. Variants that change only "
                "bands or preprocessing train on the baseline's own training split (same content "
                "hash), so they are paired comparisons; the others draw their own split from "
                "their config. The method seed is the same for every variant.",
                f"- Rotation columns: the first {ROTATION_SUBSET} test cutouts scored under the 8 "
                "dihedral transforms: mean and maximum |score change| per cutout (averaged) and "
                "the spread of TPR0 across the transforms; 0 is a perfectly invariant method "
                "(\u2013: not measured in that run).",
                "- Change = variant - baseline on the same test cutouts; [95% interval] from "
                f"{BOOTSTRAP_RESAMPLES} paired, class-stratified bootstrap resamples of the test "
                "set (it covers test-set noise, not the training seed's).", ""]

    def report_section(self, suite: Suite, task: Task, results: list[Result], *, workdir: Path,
                       out_dir: Path, stem: str, profile: str) -> tuple[list[str], list[Path]]:
        """Per method, the variants table, the generated statement and a figure; then the
        variants."""
        return design_section(task, results, workdir=workdir, out_dir=out_dir, stem=stem,
                              profile=profile)


# --------------------------------------------------------------------------- the report

@dataclass
class Row:
    """One variant of one method in the report: its record and the changes against the
    baseline with paired-bootstrap 95% intervals (NaN where there is no baseline)."""

    variant: Variant
    result: Result
    delta: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def metric(self, key: str) -> float:
        return float(self.result.metrics.get(key, np.nan))


def configuration(result: Result) -> str:
    """The method and the user's parameters of a variant run: its run id without the variant
    (``committee[max_epochs=5,variant=flat-theta]`` -> ``committee[max_epochs=5]``). Runs of one
    configuration are compared with each other, never with another configuration's baseline."""
    variant = result.params.get("variant")
    run_id = result.run_id
    for entry in (f"[variant={variant}]", f",variant={variant}", f"variant={variant},"):
        run_id = run_id.replace(entry, "", 1)
    return run_id


def without_variant_params(result: Result) -> Result:
    """The result with the parameters its variant set (e.g. ``stretch``) left out: what the
    user's command chose, for the report's "produced by" line."""
    variant = VARIANTS_BY_NAME.get(result.params.get("variant"))
    if variant is None:
        return result
    params = {key: value for key, value in result.params.items()
              if variant.method_params.get(key, object()) != value}
    return dataclasses.replace(result, params=params)


def design_rows(results: list[Result], workdir: Path) -> dict[str, list[Row]]:
    """configuration (`configuration`) -> rows in VARIANTS order, with deltas against that
    configuration's baseline."""
    by_method: dict[str, list[Row]] = {}
    for variant in VARIANTS:
        for result in results:
            if result.params.get("variant") == variant.name:
                by_method.setdefault(configuration(result), []).append(Row(variant, result))
    for rows in by_method.values():
        base = next((r for r in rows if r.variant.name == BASELINE), None)
        base_scores = stored_test_scores(base.result, workdir) if base else None
        for row in rows:
            mine = stored_test_scores(row.result, workdir)
            if (row is base or mine is None or base_scores is None
                    or mine[2] != base_scores[2]):
                continue
            row.delta = paired_bootstrap(mine[0], mine[1], base_scores[1])
    return by_method


def run_time_line(rows: list[Row]) -> str:
    """How long the variants took: the sum over runs of start to finish (training, scoring,
    rotation and real-lens checks; the simulated splits, made once and cached, are not in it)."""
    seconds = sum((datetime.fromisoformat(r.result.finished_at)
                   - datetime.fromisoformat(r.result.started_at)).total_seconds()
                  for r in rows if r.result.started_at and r.result.finished_at)
    return (f"Run time: {seconds / 60:.1f} min for {len(rows)} variants on this machine (each "
            "run from start to finish; making the simulated splits, once, is not included).")


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _interval(delta: tuple[float, float, float] | None) -> str:
    return change_text(delta) if delta else "–"


def design_statement(rows: list[Row]) -> list[str]:
    """Which choices matter and by how much, generated from the rows: the variants whose
    paired-bootstrap 95% interval of the AUROC change excludes 0, largest change first; those
    within the resampling noise; the largest TPR10 changes; the choices ranked by their largest
    |change in AUROC|; the spread of known lenses recovered."""
    base = next((r for r in rows if r.variant.name == BASELINE and r.result.status == "ok"),
                None)
    compared = [r for r in rows if r.delta]
    if base is None or not compared:
        return ["No statement: the baseline variant or the compared variants have no scores "
                "on the same test set."]

    def describe(row: Row) -> str:
        auc, tpr = row.delta["auroc"], row.delta["tpr10"]
        return (f"`{row.variant.name}` (AUROC {_signed(auc[0])} [{_signed(auc[1])}, "
                f"{_signed(auc[2])}], TPR10 {_signed(tpr[0])})")

    def matters(row: Row, key: str) -> bool:
        return row.delta[key][1] > 0 or row.delta[key][2] < 0

    by_size = sorted(compared, key=lambda r: -abs(r.delta["auroc"][0]))
    clear = [r for r in by_size if matters(r, "auroc")]
    noise = [r for r in by_size if not matters(r, "auroc")]
    lines = [f"Against `{BASELINE}` (AUROC {base.metric('auroc'):.3f}, TPR10 "
             f"{base.metric('tpr10'):.3f}, TPR at FPR 1e-3 {base.metric('tpr_fpr1e-3'):.3f}); "
             f"changes with paired-bootstrap 95% intervals over {BOOTSTRAP_RESAMPLES} "
             "resamples of the test set:", ""]
    if clear:
        better = [describe(r) for r in clear if r.delta["auroc"][0] > 0]
        worse = [describe(r) for r in clear if r.delta["auroc"][0] < 0]
        if worse:
            lines.append("- AUROC clearly lower than the baseline's, largest drop first: "
                         + "; ".join(worse) + ".")
        if better:
            lines.append("- AUROC clearly higher, largest gain first: " + "; ".join(better) + ".")
    else:
        lines.append("- No variant moves AUROC beyond the resampling noise.")
    if noise:
        lines.append("- Within the noise (the interval contains 0), largest first: "
                     + "; ".join(describe(r) for r in noise) + ".")
    tpr_order = sorted(compared, key=lambda r: -abs(r.delta["tpr10"][0]))
    tpr_clear = [r for r in tpr_order if matters(r, "tpr10")]
    lines.append("- TPR10 (the purity-limited completeness): "
                 + (("changes beyond the noise: " + "; ".join(
                     f"`{r.variant.name}` {_signed(r.delta['tpr10'][0])}" for r in tpr_clear))
                    if tpr_clear else "no change beyond the noise")
                 + f"; largest change `{tpr_order[0].variant.name}` "
                 f"{_signed(tpr_order[0].delta['tpr10'][0])}.")
    choices: dict[str, float] = {}
    for row in compared:
        choices[row.variant.choice] = max(choices.get(row.variant.choice, 0.0),
                                          abs(row.delta["auroc"][0]))
    ranked = sorted(choices.items(), key=lambda item: -item[1])
    lines.append("- Design choices ranked by their largest |change in AUROC|: "
                 + " > ".join(f"{choice} {size:.3f}" for choice, size in ranked) + ".")
    recovered = {r.variant.name: r.metric("real/recovered_fpr1e-3") for r in rows
                 if r.result.status == "ok" and "real/known_lenses" in r.result.metrics}
    if recovered:
        known = int(base.metric("real/known_lenses"))
        most, fewest = max(recovered.values()), min(recovered.values())

        def named(value: float) -> str:
            return ", ".join(f"`{name}`" for name, v in recovered.items() if v == value)

        spread = (f"every variant recovers {int(most)}" if most == fewest else
                  f"from {int(fewest)} ({named(fewest)}) to {int(most)} ({named(most)})")
        lines.append(f"- Known real lenses recovered at FPR 1e-3: {spread} of {known}; the "
                     f"baseline recovers {int(base.metric('real/recovered_fpr1e-3'))}. With "
                     f"{known} known lenses one lens is {100 / max(known, 1):.0f}%.")
    return lines


def plot_design(rows: list[Row], path: Path, title: str) -> Path:
    """Bars per variant: AUROC and TPR10 with their paired-bootstrap 95% intervals of the
    change, drawn about the variant's value; dashed lines at the baseline's values."""
    from lensbench.bench.plots import _new_figure, _save

    ok = [r for r in rows if r.result.status == "ok"]
    fig = _new_figure((9.0, 0.45 * len(ok) + 1.6))
    y = np.arange(len(ok))[::-1]
    for k, (key, label) in enumerate((("auroc", "AUROC"), ("tpr10", "TPR10"))):
        ax = fig.add_subplot(1, 2, k + 1)
        values = np.array([r.metric(key) for r in ok])
        errors = np.array([[r.delta[key][0] - r.delta[key][1], r.delta[key][2] - r.delta[key][0]]
                           if r.delta else [0.0, 0.0] for r in ok]).T
        colours = ["0.5" if r.variant.name == BASELINE else f"C{k}" for r in ok]
        ax.barh(y, values, xerr=errors, color=colours, capsize=2)
        base = next((r for r in ok if r.variant.name == BASELINE), None)
        if base is not None:
            ax.axvline(base.metric(key), color="k", linestyle="--", linewidth=1)
        finite = values[np.isfinite(values)]
        low = max(0.0, float(finite.min()) - 0.05) if len(finite) else 0.0
        ax.set_xlim(low if key == "auroc" else 0.0, 1.0)
        ax.set_yticks(y)
        ax.set_yticklabels([r.variant.name for r in ok] if k == 0 else [])
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def design_section(task: Task, results: list[Result], *, workdir: Path, out_dir: Path,
                   stem: str, profile: str) -> tuple[list[str], list[Path]]:
    md: list[str] = []
    figures = []
    for method, rows in sorted(design_rows(results, workdir).items()):
        md += [f"## {method}", ""]
        header = ["variant", "choice", "AUROC", "change in AUROC [95%]", "TPR0", "TPR10",
                  "change in TPR10 [95%]", "TPR@FPR1e-3", "known lenses > FPR1e-3",
                  *(title for title, _ in ROTATION_COLUMNS),
                  "lenses / non-lenses", "train split", "fit time (s)"]
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            result, m = row.result, row.result.metrics
            if result.status != "ok":
                md.append(f"| `{row.variant.name}` | {row.variant.choice} | {result.status}: "
                          f"{result.error_line[:80]} |" + " |" * (len(header) - 3))
                continue
            real = (f"{int(m['real/recovered_fpr1e-3'])} / {int(m['real/known_lenses'])}"
                    if "real/known_lenses" in m else "–")
            md.append("| " + " | ".join([
                f"`{row.variant.name}`", row.variant.choice, f"{m['auroc']:.3f}",
                _interval(row.delta.get("auroc")), f"{m['tpr0']:.3f}", f"{m['tpr10']:.3f}",
                _interval(row.delta.get("tpr10")), f"{m['tpr_fpr1e-3']:.3f}", real,
                *(fmt(m.get(key)) for _, key in ROTATION_COLUMNS),
                f"{int(m['n_lenses'])} / {int(m['n_nonlenses'])}",
                f"`{result.split_hashes.get('train', '?')[:12]}`",
                f"{result.fit_time_s:.1f}"]) + " |")
        md += ["", f"- {run_time_line(rows)}"]
        md += ["", "### Which choices matter", "", *design_statement(rows), ""]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", method).strip("-")  # a file name, no brackets
        figure = plot_design(rows, out_dir / f"{stem}-{slug}.png",
                             f"{method} on {task.name} ({profile} profile)")
        figures.append(figure)
        md += [f"![variants]({figure.name})", ""]
    run = {r.params.get("variant") for r in results}
    md += ["## Variants", ""]
    md += [f"- `{v.name}` ({v.choice}): {v.description}"
           + ("" if v.name in run else f" (not run in the {profile} profile)") for v in VARIANTS]
    md.append("")
    return md, figures
