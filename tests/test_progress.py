"""Long work shows its progress (issue 24): training epochs with the training loss and the
validation figure, scoring passes, on stderr; plain lines at most every interval when stderr is
not a terminal."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from lensbench.deep.methods import ResNetFinder
from lensbench.deep.nets import build_net
from lensbench.deep.preprocess import Augment, Preprocessor
from lensbench.deep.progress import INTERVAL_ENV, Progress
from lensbench.deep.train import TrainConfig, deterministic, train_net


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n, 2, 16, 16)).astype(np.float32)
    y = np.arange(n) % 2
    X[y == 1, :, 6:10, 6:10] += 4.0
    return X, y


def _train(epochs: int) -> None:
    X, y = _images()
    pre = Preprocessor(crop=None).fit(X)
    Xn = pre.normalise(X)
    cfg = TrainConfig(max_epochs=epochs, batch_size=16, patience=None, device="cpu",
                      augment=Augment(shift=0.0, flux_scale=0.0), num_threads=1)
    with deterministic(0, 1):
        net = build_net("resnet", 2, width=4, depth=1)
        train_net(net, Xn[:32], y[:32], Xn[32:], y[32:], pre, cfg, seed=0, label="tiny net")


def test_training_writes_epoch_lines_with_loss_and_validation_figure(monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_ENV, "0")  # a line at every chance instead of every 30 s
    _train(epochs=3)
    err = capsys.readouterr().err
    epoch_lines = [line for line in err.splitlines() if "images" not in line]
    assert len(epoch_lines) == 3, err
    for number, line in enumerate(epoch_lines, start=1):
        assert line.startswith("tiny net:") and f" {number}/3 " in line, line
        loss = re.search(r"train_loss (\d+\.?\d*)", line)
        assert loss and float(loss.group(1)) > 0 and re.search(r"val_auroc [01]\.?\d*", line)
        assert "\r" not in line  # plain lines, not tqdm's carriage-return redraws
    # Within an epoch the output says how far it got.
    assert re.search(r"epoch 1: \d+/32 images", err)


def test_short_work_in_a_log_stays_quiet_at_the_default_interval(monkeypatch, capsys):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    _train(epochs=2)
    assert capsys.readouterr().err == ""


def test_plain_lines_come_at_most_once_per_interval_and_the_end_is_shown():
    stream = io.StringIO()
    clock = [0.0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lensbench.deep.progress.time.monotonic", lambda: clock[0])
        with Progress(10, "work", unit="step", stream=stream, interval=30) as progress:
            for step in range(10):
                clock[0] += 12.0  # a step every 12 s: 30 s after the last line at 36, 72, 108 s
                progress.update(loss=1.0 / (step + 1))
    lines = stream.getvalue().splitlines()
    counts = [re.search(r" (\d+)/10 ", line).group(1) for line in lines]
    assert counts == ["3", "6", "9", "10"], lines  # the last one: the end, written by close()
    assert "loss 0.1" in lines[-1]


def test_scoring_with_test_time_augmentation_shows_its_passes(monkeypatch, capsys):
    X, y = _images()
    finder = ResNetFinder(members=1, width=4, depth=1, max_epochs=1, batch_size=16, crop=None,
                          tta="mean", device="cpu", num_threads=1, calibrate=False)
    finder.fit(X, y)
    capsys.readouterr()
    monkeypatch.setenv(INTERVAL_ENV, "0")
    finder.predict_score(X)
    lines = [line for line in capsys.readouterr().err.splitlines() if "scoring" in line]
    assert lines and all(line.startswith("ResNetFinder scoring 48:") for line in lines)
    assert re.search(r" 8/8 ", lines[-1]), lines  # one pass per dihedral transform


def test_run_suite_says_how_many_runs_it_will_do_and_how_many_are_left(tmp_path):
    from lensbench.bench.runner import run_suite
    from lensbench.bench.tasks import get_suite

    lines: list[str] = []
    methods = ["random", "pixel-logreg", "pca"]
    run_suite(get_suite("smoke"), profile="smoke", seed=0, workdir=tmp_path, methods=methods,
              log=lines.append)
    assert lines[0] == "3 runs to do (smoke-ground: 3)"
    left = [line for line in lines if line.endswith("runs left")]
    assert left == ["2 of 3 runs left", "1 of 3 runs left"]
    # Each count follows the line of the run it counts.
    assert [lines[lines.index(line) - 1].split()[0] for line in left] == methods[:2]
    lines.clear()
    run_suite(get_suite("smoke"), profile="smoke", seed=0, workdir=tmp_path, methods=methods,
              resume=True, log=lines.append)
    assert lines[0] == "3 runs to do (smoke-ground: 3)" and not any("left" in x for x in lines)
