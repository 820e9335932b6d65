"""Nothing read from a checkpoint runs code (issue 20, point 1): the method class is looked up
only by its registered name, its parameters are checked against the class's own, every other
field is type-checked, and files load with ``torch.load(weights_only=True)``. Every crafted file
here is made by the test itself; a file ``pwned`` appearing in the test folder means the
checkpoint ran code."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
import torch
from astropy.io import fits
from lensbench.baselines.contract import TaskInfo
from lensbench.bench.cli import main
from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
from lensbench.deep.methods import ResNetFinder
from lensbench.deep.regression import ResNetRegressor

SHAPE = (2, 16, 16)
FINDER_INFO = TaskInfo(name="toy", kind="lens-finding", bands=("g", "r"), pixel_scale=0.2,
                       image_shape=SHAPE)
TARGETS = ("x", "y", "theta_e")
REGRESSOR_INFO = TaskInfo(name="toy", kind="modeling", bands=("g", "r"), pixel_scale=0.2,
                          image_shape=SHAPE, targets=TARGETS)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def finder_file(tmp_path_factory):
    """A genuine checkpoint of a tiny fitted ResNetFinder."""
    X = _images(48)
    y = np.arange(48) % 2
    X[y == 1, :, 6:10, 6:10] += 3.0
    method = ResNetFinder(width=8, crop=None, max_epochs=1, batch_size=16, patience=None,
                          device="cpu", num_threads=1, random_state=1).fit(X, y, info=FINDER_INFO)
    return save_checkpoint(method, tmp_path_factory.mktemp("finder") / "model.pt")


@pytest.fixture(scope="module")
def regressor_file(tmp_path_factory):
    """A genuine checkpoint of a tiny fitted ResNetRegressor."""
    X = _images(40, seed=1)
    Y = np.random.default_rng(2).normal(0.0, 1.0, (40, len(TARGETS)))
    method = ResNetRegressor(width=8, max_epochs=1, batch_size=16, calibrate=False,
                             device="cpu", num_threads=1, random_state=0)
    method.fit(X, Y, info=REGRESSOR_INFO)
    return method.save(tmp_path_factory.mktemp("regressor") / "regressor.pt")


def _tampered(source: pathlib.Path, target: pathlib.Path, **changes) -> pathlib.Path:
    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload.update(changes)
    torch.save(payload, target)
    return target


def _old_format(payload: dict, class_path: str) -> dict:
    """The payload as lensbench wrote it before methods were named by their registry name."""
    payload = {k: v for k, v in payload.items() if k != "method"}
    return {**payload, "format": "lensbench-deep-checkpoint/1", "class": class_path}


def _run_command_payload(tmp_path: pathlib.Path, finder_file, old_format: bool) -> pathlib.Path:
    payload = torch.load(finder_file, map_location="cpu", weights_only=True)
    params = {"args": ["sh", "-c", f"touch {tmp_path / 'pwned'}"]}
    if old_format:
        payload = _old_format(payload, "subprocess:run")
    else:
        payload["method"] = "subprocess:run"
    payload["params"] = params
    torch.save(payload, tmp_path / "ck.pt")
    return tmp_path / "ck.pt"


# ----------------------------------------------------------------------------- deep checkpoints


def test_checkpoint_names_its_method_by_registered_name(finder_file):
    payload = torch.load(finder_file, map_location="cpu", weights_only=True)
    assert payload["method"] == "resnet" and "class" not in payload


@pytest.mark.parametrize("old_format", [True, False], ids=["old-class-field", "method-field"])
def test_checkpoint_naming_a_function_runs_nothing(finder_file, tmp_path, old_format):
    crafted = _run_command_payload(tmp_path, finder_file, old_format)
    refused = r"ck\.pt: field '(class|method)': expected .*registered.*'subprocess:run'"
    with pytest.raises(ValueError, match=refused):
        load_checkpoint(crafted)
    assert not (tmp_path / "pwned").exists()


def test_scan_of_a_checkpoint_naming_a_function_runs_nothing(finder_file, tmp_path, capsys):
    crafted = _run_command_payload(tmp_path, finder_file, old_format=True)
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    for k, cube in enumerate(_images(3, seed=5)):
        fits.writeto(cutouts / f"obj{k}.fits", cube)
    rc = main(["scan", "--model", str(crafted), "--cutouts", str(cutouts),
               "--out", str(tmp_path / "out.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert not (tmp_path / "pwned").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ")
    assert str(crafted) in lines[0] and "'subprocess:run'" in lines[0]


def test_a_model_that_is_not_a_torch_file_is_named_as_such_without_torchs_advice(tmp_path):
    # torch's own refusal advises loading with weights_only=False, which would run the file's
    # code: lensbench never passes that advice on
    image = tmp_path / "image.fits"
    fits.writeto(image, np.zeros((4, 4)))
    with pytest.raises(ValueError) as refused:
        load_checkpoint(image)
    message = str(refused.value)
    assert message.startswith(f"{image}: not a lensbench deep checkpoint")
    assert message.endswith("it is not a torch file (torch.save writes zip archives)")
    assert "weights_only" not in message and "trusted source" not in message


def test_old_class_field_loads_only_when_it_is_exactly_a_registered_class(finder_file, tmp_path):
    payload = torch.load(finder_file, map_location="cpu", weights_only=True)
    old = tmp_path / "old.pt"
    torch.save(_old_format(payload, "lensbench.deep.methods:ResNetFinder"), old)
    X = _images(4, seed=3)
    assert np.array_equal(load_checkpoint(old).predict_score(X),
                          load_checkpoint(finder_file).predict_score(X))
    # A class that exists in a lensbench module but is not a registered method is refused.
    torch.save(_old_format(payload, "lensbench.deep.methods:NetFinder"), old)
    refused = r"old\.pt: field 'class'.*registered.*'lensbench\.deep\.methods:NetFinder'"
    with pytest.raises(ValueError, match=refused):
        load_checkpoint(old)


def test_registered_method_that_is_not_a_cnn_finder_is_refused(finder_file, tmp_path):
    crafted = _tampered(finder_file, tmp_path / "ck.pt", method="random")
    refused = r"ck\.pt: field 'method': expected a CNN lens finder.*'random'"
    with pytest.raises(ValueError, match=refused):
        load_checkpoint(crafted)


@pytest.mark.parametrize("params, expected", [
    ({"width": 8, "no_such_parameter": 1}, r"field 'params'.*'no_such_parameter'.*ResNetFinder"),
    ({"width": [8, 8]}, r"field 'params'.*'width'.*list"),
    ({"width": {"__class__": "x"}}, r"field 'params'.*'width'.*dict"),
    ({"arch": 3}, r"field 'params'.*'arch'.*str"),
    (["width", 8], r"field 'params'.*dict"),
], ids=["unknown-key", "list-value", "dict-value", "wrong-scalar", "not-a-dict"])
def test_checkpoint_params_are_checked_against_the_class(finder_file, tmp_path, params,
                                                          expected):
    crafted = _tampered(finder_file, tmp_path / "ck.pt", params=params)
    with pytest.raises(ValueError, match=r"ck\.pt: " + expected):
        load_checkpoint(crafted)


@pytest.mark.parametrize("field, value, expected", [
    ("bands", "gr", "list of band names"),
    ("bands", [1, 2], "list of band names"),
    ("image_shape", [3, 16, 16], "2 bands first"),
    ("image_shape", ["2", 16, 16], "3 positive ints"),
    ("image_shape", [2, 16], "3 positive ints"),
    ("net_configs", [{"arch": "nosuch", "in_channels": 2}], "known architecture"),
    ("net_configs", ["resnet"], "dict"),
    ("net_configs", [{"arch": "resnet", "in_channels": 2, "width": 8, "bogus": 1}],
     "does not fit"),
    ("weights", [{"stem.weight": "not a tensor"}], "tensors"),
    ("weights", [], "one per net config"),
    ("preprocessing", {"stretch": "asinh", "noise": "loud"}, "noise"),
    ("preprocessing", {"stretch": "asinh", "exec": "x"}, "'exec'"),
    ("temperature", "hot", "positive finite number"),
    ("best_epochs", ["1"], "list of ints"),
    ("calibration", {"ece_after_": "low"}, "numbers"),
    ("calibration", {"__dict__": 1.0}, "'__dict__'"),
])
def test_tampered_field_types_are_refused_naming_the_field(finder_file, tmp_path, field, value,
                                                           expected):
    crafted = _tampered(finder_file, tmp_path / "ck.pt", **{field: value})
    with pytest.raises(ValueError, match=rf"ck\.pt: field '{field}'.*{expected}"):
        load_checkpoint(crafted)


@pytest.mark.parametrize("size", [{"width": 10**6}, {"depth": 10**9}, {"width": 10_000}],
                         ids=["width", "depth", "width-within-the-weight-count"])
def test_huge_claimed_network_is_refused_before_it_is_built(finder_file, tmp_path, size):
    """A net config claiming a network far larger than its stored weights is refused without
    building the claimed network (10**9 residual units would take hours, a width of 10000 over
    60 GB)."""
    payload = torch.load(finder_file, map_location="cpu", weights_only=True)
    config = {**payload["net_configs"][0], **size}
    crafted = _tampered(finder_file, tmp_path / "ck.pt", net_configs=[config])
    with pytest.raises(ValueError, match=r"ck\.pt: member 0 weights do not fit resnet"):
        load_checkpoint(crafted)


# ----------------------------------------------------------------------------- regressors


class _TouchOnLoad:
    """Unpickling this object creates the file ``target``."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


def test_regressor_file_with_a_reduce_payload_runs_nothing(regressor_file, tmp_path):
    payload = torch.load(regressor_file, map_location="cpu", weights_only=True)
    payload["best_epochs"] = _TouchOnLoad(tmp_path / "pwned")
    crafted = tmp_path / "regressor.pt"
    torch.save(payload, crafted)
    with pytest.raises(ValueError, match=r"regressor\.pt: .*weights only"):
        ResNetRegressor.load(crafted)
    assert not (tmp_path / "pwned").exists()


def test_regressor_round_trip_loads_weights_only(regressor_file):
    payload = torch.load(regressor_file, map_location="cpu", weights_only=True)
    assert payload["method"] == "resnet-regressor"
    again = ResNetRegressor.load(regressor_file, info=REGRESSOR_INFO)
    X = _images(5, seed=9)
    first = ResNetRegressor.load(regressor_file).predict_with_uncertainty(X)
    second = again.predict_with_uncertainty(X)
    for key in ("mean", "variance"):
        np.testing.assert_array_equal(first[key], second[key])
    assert isinstance(again.target_mean_, np.ndarray) and again.target_mean_.shape == (3,)


@pytest.mark.parametrize("changes, expected", [
    ({"method": "subprocess:run"}, r"field 'method'.*registered.*'subprocess:run'"),
    ({"method": "resnet"}, r"field 'method': expected a ResNetRegressor.*'resnet'"),
    ({"params": {"width": 8, "args": ["sh"]}}, r"field 'params'.*'args'"),
    ({"targets": "xy"}, r"field 'targets'.*list of target names"),
    ({"target_mean": [0.0, 1.0]}, r"field 'target_mean'.*3 finite numbers"),
    ({"variance_scale": "big"}, r"field 'variance_scale'.*3 positive finite numbers"),
    ({"net_configs": [{"arch": "nosuch", "in_channels": 2}]}, r"field 'net_configs'.*known"),
    ({"bands": [b"g", b"r"]}, r"field 'bands'.*list of band names"),
], ids=["function", "wrong-kind", "unknown-param", "targets", "mean", "variance", "arch",
        "bands"])
def test_tampered_regressor_fields_are_refused(regressor_file, tmp_path, changes, expected):
    crafted = _tampered(regressor_file, tmp_path / "regressor.pt", **changes)
    with pytest.raises(ValueError, match=r"regressor\.pt: " + expected):
        ResNetRegressor.load(crafted)
    assert not (tmp_path / "pwned").exists()


def test_a_report_embeds_only_its_own_figures(tmp_path):
    # Text from a results store reaches the report's Markdown; an image line naming another
    # file must not copy it into an HTML report meant to be shared.
    import base64

    from lensbench.bench.report import markdown_to_html

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"outside the report")
    out = tmp_path / "report"
    out.mkdir()
    (out / "roc.png").write_bytes(b"the report's figure")
    (out / "link.png").symlink_to(secret)
    page = markdown_to_html("\n".join([
        "![ROC](roc.png)", f"![x]({secret})", "![x](../secret.png)", "![x](link.png)",
        "![no parenthesis", "![x](missing.png)"]), out)
    embedded = [base64.b64decode(data)
                for data in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]
    assert embedded == [b"the report's figure"]
    assert "../secret.png" in page and "no parenthesis" in page  # shown as text


def test_a_record_whose_identity_spans_lines_is_skipped_with_a_warning(tmp_path):
    import json

    from lensbench.bench.results import ResultsStoreWarning, read_results

    record = {"run_id": "random\n![x](/etc/passwd)", "method": "random", "task": "smoke-ground",
              "suite": "smoke", "profile": "smoke", "params": {}, "split_hashes": {}, "seed": 0,
              "status": "failed", "error": "boom", "suite_seed": 0, "schema_version": 1}
    store = tmp_path / "results.jsonl"
    store.write_text(json.dumps(record) + "\n" + json.dumps({**record, "run_id": "random"})
                     + "\n")
    with pytest.warns(ResultsStoreWarning, match=r"line 1 .*'run_id' must be one line"):
        results = read_results(store)
    assert [r.run_id for r in results] == ["random"]


class _SystemOnLoad:
    """Unpickling this object would call os.system, a global in a module torch blocks."""

    def __reduce__(self):
        import os

        return os.system, ("true",)


def test_a_blocked_global_is_named_without_torchs_advice_to_trust_the_file(tmp_path):
    crafted = tmp_path / "evil.pt"
    torch.save({"x": _SystemOnLoad()}, crafted)
    with pytest.raises(ValueError) as refused:
        load_checkpoint(crafted)
    message = str(refused.value)
    assert "it holds a pickled Python object (" in message and "system" in message
    assert "weights_only" not in message and "arbitrary code" not in message


@pytest.mark.parametrize("change, field", [
    (lambda manifest: [], "expected a JSON object"),
    (lambda manifest: {**manifest, "drops": [1, 2]}, "field 'drops' must be"),
    (lambda manifest: {**manifest, "files": "a.csv"}, "field 'files' must be"),
])
def test_a_malformed_photoz_split_manifest_is_named_and_the_split_remade(
        tmp_path, real_data, change, field, monkeypatch):
    import json

    from lensbench.datasets import photoz

    real_data("photoz_sdss_mgs/")
    split = photoz.ensure_photoz_split("sdss_mgs", tmp_path, seed=0)
    folder = next((tmp_path / "splits").iterdir())
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(change(json.loads(manifest.read_text()))))
    with pytest.raises(ValueError, match=rf"{re.escape(str(manifest))}: {field}"):
        photoz.load_photoz_split(folder)
    made = []
    monkeypatch.setattr(photoz, "make_photoz_split",
                        lambda *args: made.append(args) or split)
    photoz.ensure_photoz_split("sdss_mgs", tmp_path, seed=0)  # remade, not a traceback
    assert len(made) == 1
    np.testing.assert_array_equal(photoz.load_photoz_split(folder).parts["test"].z,
                                  split.parts["test"].z)
