"""Shared fixtures: a real MLflow tracking server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# Real data comes from the shared mirror beside the repository (never downloaded in tests).
_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _MIRROR.is_dir():
    os.environ.setdefault("LENSBENCH_DATA_DIR", str(_MIRROR))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, served artefacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        # The server runs uvicorn workers in its own process group: stop them all.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _postgres_bin(name: str) -> str:
    """Debian's PostgreSQL binaries (apt package postgresql; .ci/run installs it)."""
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found or not found[-1]:
        pytest.fail(f"PostgreSQL's {name} not found: install Debian's postgresql package "
                    "(.ci/run does)")
    return found[-1]


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on a free loopback port, in a throw-away data directory.
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="lensbench-postgres-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run([*as_user, _postgres_bin("initdb"), "-D", str(data), "-U", "lensbench",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    log = root / "postgres.log"
    subprocess.run([*as_user, _postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*as_user, _postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "lensbench", "optuna"], check=True, capture_output=True)
        yield f"postgresql://lensbench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, _postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
