"""The photo-z kind scores every method's p(z) (issue 25.3): evaluate adds RAIL's and Beck et
al.'s metrics beside the point metrics, which it leaves as they were; each run keeps its PIT
values and example p(z) with a figure; the report section has the distribution table, the PIT
histograms and Q-Q plots and the example p(z)."""

from __future__ import annotations

import numpy as np
from lensbench.baselines.photoz import KNNPhotoz
from lensbench.bench.results import Result
from lensbench.bench.suites import photoz as kind_module
from lensbench.bench.tasks import get_suite
from test_contract import tiny_catalogue


def _data():
    X, z = tiny_catalogue(n=600, seed=0)
    parts = {"train": slice(0, 400), "val": slice(400, 480), "test": slice(480, 600)}
    return kind_module.PhotozData(
        X={role: X[rows] for role, rows in parts.items()},
        z={role: z[rows] for role, rows in parts.items()},
        hashes={role: role * 8 for role in parts}, data_files={},
        meta={"drops": {}, "n_kept": 600}, bands=("u", "g", "r", "i", "z"))


def test_evaluate_adds_the_distribution_metrics_and_the_report_shows_them(tmp_path):
    task = get_suite("photoz").tasks[0]
    kind, data = kind_module.Photoz(), _data()
    method = KNNPhotoz(n_neighbors=16).fit(data.X["train"], data.z["train"],
                                          validation=(data.X["val"], data.z["val"]))
    evaluation = kind.evaluate(method, task, data, "knn-photoz")
    metrics = evaluation.metrics
    # the point metrics are the ones the kind always computed, unchanged
    z_phot = method.predict(data.X["test"])
    variance = method.predict_variance(data.X["test"])
    point = kind_module.score_photoz(z_phot, data.z["test"], data.X["test"][:, :5], data.bands,
                                     task.photoz["z_edges"], variance)
    np.testing.assert_equal({key: metrics[key] for key in point}, point)
    for key in ("pit_ks", "pit_cvm", "pit_ad", "pit_outlier_rate", "cdeloss", "point_bias",
                "point_stats_iqr", "point_stats_sigma_mad", "point_outlier_rate", "beck_sigma",
                "beck_outlier_rate_3sigma", "val/pit_ks", "val/cdeloss"):
        assert np.isfinite(metrics[key]), key
    assert metrics["point_stats_sigma_mad"] == metrics["sigma_nmad"]
    pit = evaluation.predictions["pit"]
    assert pit.shape == (120,) and ((pit >= 0) & (pit <= 1)).all()
    rows = evaluation.predictions["example_rows"]
    assert evaluation.predictions["pdf_examples"].shape == (len(kind_module.EXAMPLE_QUANTILES),
                                                            301)
    # the examples climb through z_spec
    assert (np.diff(data.z["test"][rows]) >= 0).all()

    folder = tmp_path / "runs" / "knn"
    folder.mkdir(parents=True)
    result = Result(run_id="knn-photoz", method="knn-photoz", task=task.name, suite="photoz",
                    profile="smoke", params={}, split_hashes=data.hashes, seed=0, status="ok",
                    metrics=metrics, fit_time_s=0.1, n_train=400, n_test=120)
    paths = kind.write_artifacts(result, evaluation, task, data, folder)
    assert paths["pit"].stat().st_size > 1000 and paths["pdf_examples"].stat().st_size > 1000
    with np.load(paths["predictions"]) as saved:
        np.testing.assert_array_equal(saved["pit"], pit)
    result.artifacts = {name: str(path.relative_to(tmp_path)) for name, path in paths.items()}
    md, figures = kind.report_section(get_suite("photoz"), task, [result], workdir=tmp_path,
                                      out_dir=tmp_path / "out", stem="photoz", profile="smoke")
    text = "\n".join(md)
    assert "| `knn-photoz` | " + f"{metrics['cdeloss']:.3f}" in text
    assert "0.0205" in text and "4.11%" in text  # Beck et al.'s figures, set beside
    names = {path.name for path in figures}
    assert {f"photoz-{task.name}-pit.png", f"photoz-{task.name}-pdf-examples.png"} <= names


def test_a_pdf_off_the_grid_is_refused_with_the_method_named():
    task = get_suite("photoz").tasks[0]
    data = _data()

    class OffGrid(KNNPhotoz):
        def predict_pdf(self, X):
            return np.ones((len(X), 10))

    method = OffGrid(n_neighbors=16).fit(data.X["train"], data.z["train"])
    try:
        kind_module.Photoz().evaluate(method, task, data, "off-grid")
    except ValueError as error:
        assert "off-grid.predict_pdf returned shape (120, 10) on test" in str(error)
    else:
        raise AssertionError("a p(z) off the grid was accepted")


def test_a_tuning_study_may_minimise_the_cde_loss_on_the_validation_part():
    from lensbench.bench.kinds import MINIMIZE, StudyData

    data = _data()
    kind = kind_module.Photoz()
    assert kind.direction("cdeloss") == MINIMIZE and kind.direction("pit_ks") == MINIMIZE
    study = StudyData(None, data.X["train"], data.z["train"], data.X["val"], data.z["val"])
    narrow, chosen = (KNNPhotoz(n_neighbors=16, bandwidth=h).fit(study.X_fit, study.y_fit)
                      for h in (0.0025, 0.02))
    scores = [kind.validation_metrics(m, study) for m in (narrow, chosen)]
    assert all(np.isfinite(s["cdeloss"]) and np.isfinite(s["pit_ks"]) for s in scores)
    assert scores[0]["sigma_nmad"] == scores[1]["sigma_nmad"]  # the bandwidth moves only p(z)
    assert scores[0]["pit_ks"] != scores[1]["pit_ks"]
