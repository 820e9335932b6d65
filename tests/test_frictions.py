"""Small frictions of a first hour (issue 24.6): `bench run --help` names the suites, a fresh
MLflow store is created quietly with its Default experiment beside the database, and `bench ui`
does not print MLflow's Starlette deprecation warnings."""

from __future__ import annotations

import os
import subprocess
import sys

from lensbench.bench.cli import build_parser
from lensbench.bench.tasks import SUITES
from lensbench.bench.tracking import mlflow_ui_environment


def test_run_help_lists_every_suite(capsys):
    for command in ("run", "tune", "report"):
        try:
            build_parser().parse_args([command, "--help"])
        except SystemExit:
            pass
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in SUITES), (command, text)


def test_a_fresh_store_is_created_quietly_with_default_beside_the_database(tmp_path):
    # A child process: MLflow's log handler writes to the real stderr, as in `bench run`.
    database = tmp_path / "work" / "mlflow.db"
    script = (
        "from lensbench.bench.tracking import MlflowTracker\n"
        f"tracker = MlflowTracker('sqlite:///{database}', 'lensbench-smoke')\n"
        "assert tracker.start_suite('smoke', 'smoke', 0)\n"
        "tracker.end_suite()\n"
        "from mlflow.tracking import MlflowClient\n"
        f"for e in MlflowClient('sqlite:///{database}').search_experiments():\n"
        "    print(e.name, e.artifact_location)\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert child.returncode == 0, child.stderr
    assert "INFO" not in child.stderr and "database tables" not in child.stderr, child.stderr
    locations = dict(line.split(" ", 1) for line in child.stdout.splitlines())
    default = tmp_path / "work" / "mlartifacts" / "0"
    assert locations["Default"] == default.as_uri() and default.is_dir()
    assert locations["lensbench-smoke"].startswith((tmp_path / "work").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_ui_environment_silences_the_starlette_wsgi_warning_only():
    importing = [sys.executable, "-c", "import starlette.middleware.wsgi; "
                 "import warnings; warnings.warn('another warning')"]
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    plain = subprocess.run(importing, capture_output=True, text=True, env=environ, timeout=60)
    assert "StarletteDeprecationWarning" in plain.stderr  # what `bench ui` printed 4 times
    quiet = subprocess.run(importing, capture_output=True, text=True, timeout=60,
                           env=mlflow_ui_environment({**environ, "PYTHONWARNINGS": "default"}))
    assert "StarletteDeprecationWarning" not in quiet.stderr
    assert "another warning" in quiet.stderr  # other warnings still show
