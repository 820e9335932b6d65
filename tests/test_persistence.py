"""Model files (baselines/persistence.py): every registered method that can be fitted is saved
and loaded back to identical predictions, on the tiny tasks of tests/test_contract.py; the
contract travels with it; a model file never runs code and bad ones are refused naming the
file and the field."""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from collections import Counter

import numpy as np
import pytest
from lensbench.baselines.persistence import (
    ModelContract,
    family_of,
    load_model,
    make_contract,
    save_model,
)
from lensbench.baselines.registry import METHODS, resolve_method
from test_contract import TASKS, TINY

# Methods with nothing to save, and why (the contract test checks this list is exact).
NOTHING_TO_SAVE = {"lenstronomy-fit": "fits each lens when it predicts"}


def _predictions(method, X) -> dict[str, np.ndarray]:
    """Everything the method predicts: scores and, where it has them, uncertainties and p(z)."""
    out = {"score": np.asarray(method.predict_score(X))}
    if hasattr(method, "predict_variance"):
        out["variance"] = np.asarray(method.predict_variance(X))
    if hasattr(method, "predict_with_uncertainty"):
        out |= {f"u/{k}": np.asarray(v) for k, v in method.predict_with_uncertainty(X).items()}
    if hasattr(method, "predict_pdf"):
        out["pdf"] = np.asarray(method.predict_pdf(X))
    return out


def test_nothing_to_save_is_declared_by_the_methods_themselves():
    """The exceptions are exactly the classes that say persistence None."""
    assert {name for name in METHODS if family_of(resolve_method(name)) is None} == set(
        NOTHING_TO_SAVE)


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(NOTHING_TO_SAVE)))
def test_every_fitted_method_saves_and_reloads_to_identical_predictions(name, tmp_path):
    cls = resolve_method(name)
    method = cls(**TINY.get(name, {}))
    kind = next(k for k in method.kinds if k in TASKS)
    info, make = TASKS[kind]
    X, y = make()
    method.fit(X, y, info=info)
    before = _predictions(method, X[:20])
    contract = make_contract(method, info, task_version=3, split_hashes={"train": "ab" * 32})
    path = save_model(method, tmp_path / f"{name}.lbmodel", contract)
    for key, value in _predictions(method, X[:20]).items():  # saving changed nothing
        np.testing.assert_array_equal(value, before[key], err_msg=f"{name}: {key} after saving")
    loaded, read_contract = load_model(path)
    assert type(loaded) is cls
    # parameters are stored as JSON: equal as JSON data (a tuple may come back as a list)
    assert json.dumps(loaded.get_params(), sort_keys=True) == json.dumps(
        method.get_params(), sort_keys=True)
    assert read_contract == contract
    after = _predictions(loaded, X[:20])
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=f"{name}: {key}")


def test_nothing_to_save_raises_a_clear_type_error(tmp_path):
    method = resolve_method("lenstronomy-fit")()
    with pytest.raises(TypeError, match="nothing to save"):
        save_model(method, tmp_path / "m.lbmodel")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- untrusted files


def _knn_file(tmp_path):
    info, make = TASKS["photoz"]
    X, y = make()
    method = resolve_method("knn-photoz")(n_neighbors=8).fit(X, y, info=info)
    return save_model(method, tmp_path / "knn.lbmodel", make_contract(method, info)), X


def _rewrite(path, replace: dict[str, bytes]):
    """The model archive at ``path`` with members replaced (or added)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members |= replace
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    path.write_bytes(buffer.getvalue())


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_an_array_header_claiming_more_than_the_archive_holds_is_refused(tmp_path):
    from numpy.lib import format as npy

    path, _ = _knn_file(tmp_path)
    with np.load(io.BytesIO(_members(path)["arrays.npz"])) as arrays:
        members = {f"{key}.npy": arrays[key] for key in arrays.files}
    name = next(iter(members))
    claim = io.BytesIO()  # 36 TiB declared, 16 bytes held: numpy would allocate it all first
    npy.write_array_header_2_0(claim, {"descr": "<f8", "fortran_order": False,
                                       "shape": (10**5, 10**5, 500)})
    claim.write(bytes(16))
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        for key, array in members.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(key, claim.getvalue() if key == name else buffer.getvalue())
    _rewrite(path, {"arrays.npz": npz.getvalue()})
    with pytest.raises(ValueError, match=rf"knn.lbmodel: arrays.npz: {name[:-4]}: its header "
                                         r"declares \(100000, 100000, 500\) float64 "
                                         r"\(40000000000000 bytes\), the archive holds 16"):
        load_model(path)


def test_a_method_outside_the_registry_is_refused(tmp_path):
    path, _ = _knn_file(tmp_path)
    manifest = json.loads(_members(path)["manifest.json"])
    _rewrite(path, {"manifest.json": json.dumps({**manifest, "method": "os:system"})})
    with pytest.raises(ValueError, match=r"knn.lbmodel: field 'method': expected a registered"):
        load_model(path)


def test_parameters_the_class_does_not_take_are_refused(tmp_path):
    path, _ = _knn_file(tmp_path)
    manifest = json.loads(_members(path)["manifest.json"])
    manifest["params"]["__class__"] = "x"
    _rewrite(path, {"manifest.json": json.dumps(manifest)})
    with pytest.raises(ValueError, match=r"field 'params': '__class__' is not a parameter"):
        load_model(path)


@pytest.mark.parametrize("payload", [functools.partial(len), os.system, Counter(a=1)])
def test_a_skops_file_needing_other_types_than_the_methods_save_is_refused(tmp_path, payload):
    import skops.io

    path, _ = _knn_file(tmp_path)
    member = next(name for name in _members(path) if name.startswith("sklearn/"))
    _rewrite(path, {member: skops.io.dumps(payload)})
    with pytest.raises(ValueError, match=r"needs the type .* which no lensbench method saves: "
                                         r"refused"):
        load_model(path)


def _datasource(folder, remove: bool):
    """numpy's DataSource, whose __del__ deletes its folder when it made it (_istmpdest)."""
    from numpy.lib._datasource import DataSource

    source = DataSource.__new__(DataSource)
    source.__dict__.update(_destpath=str(folder), _istmpdest=remove)
    return source


def test_a_numpy_class_that_deletes_a_folder_is_not_built(tmp_path):
    # A class of numpy is not therefore safe: this one's __del__ removes the folder the file
    # names. Only the types the methods save are built.
    import gc

    import skops.io

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    source = _datasource(victim, remove=True)
    blob = skops.io.dumps(source)
    source._istmpdest = False  # this process's copy must not delete it
    del source
    path, _ = _knn_file(tmp_path)
    member = next(name for name in _members(path) if name.startswith("sklearn/"))
    _rewrite(path, {member: blob})
    with pytest.raises(ValueError, match=r"DataSource.* which no lensbench method saves"):
        load_model(path)
    gc.collect()
    assert (victim / "data.txt").read_text() == "precious"


def test_a_module_named_in_a_skops_file_is_never_imported(tmp_path):
    # numpy.f2py.__main__ runs f2py's command line when imported.
    import sys

    import skops.io

    inner = zipfile.ZipFile(io.BytesIO(skops.io.dumps(_datasource(tmp_path, remove=False))))
    schema = json.loads(inner.read("schema.json"))
    schema["__module__"], schema["__class__"] = "numpy.f2py.__main__", "X"
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as archive:
        for name in inner.namelist():
            archive.writestr(name, json.dumps(schema) if name == "schema.json"
                             else inner.read(name))
    path, _ = _knn_file(tmp_path)
    member = next(name for name in _members(path) if name.startswith("sklearn/"))
    _rewrite(path, {member: blob.getvalue()})
    assert "numpy.f2py.__main__" not in sys.modules
    with pytest.raises(ValueError, match=r"numpy.f2py.__main__.X.* which no lensbench method"):
        load_model(path)
    assert "numpy.f2py.__main__" not in sys.modules


def test_pickled_arrays_are_refused(tmp_path):
    path, _ = _knn_file(tmp_path)
    buffer = io.BytesIO()
    arrays = dict(np.load(io.BytesIO(_members(path)["arrays.npz"])))
    arrays["a0"] = np.array([Counter(a=1)], dtype=object)
    np.savez(buffer, **arrays)
    _rewrite(path, {"arrays.npz": buffer.getvalue()})
    with pytest.raises(ValueError, match=r"knn.lbmodel: arrays.npz"):
        load_model(path)


def test_a_pickled_torch_payload_is_refused(tmp_path):
    import torch

    info, make = TASKS["photoz"]
    X, y = make()
    method = resolve_method("pdf-mlp-photoz")(**TINY["pdf-mlp-photoz"]).fit(X, y, info=info)
    path = save_model(method, tmp_path / "pdf.lbmodel")
    member = next(name for name in _members(path) if name.startswith("torch/"))
    buffer = io.BytesIO()
    torch.save({"weight": functools.partial(len)}, buffer)
    _rewrite(path, {member: buffer.getvalue()})
    with pytest.raises(ValueError, match=r"pickled Python object \(functools.partial\)"):
        load_model(path)
    torch.save({"weight": Counter(a=1)}, buffer := io.BytesIO())  # loads weights-only
    _rewrite(path, {member: buffer.getvalue()})
    with pytest.raises(ValueError, match=r"pdf.lbmodel: field 'state.members_\[0\]': "
                                         r"expected member 0: a dict of tensors"):
        load_model(path)


def test_a_network_claiming_other_shapes_than_its_weights_is_refused(tmp_path):
    info, make = TASKS["photoz"]
    X, y = make()
    method = resolve_method("pdf-mlp-photoz")(**TINY["pdf-mlp-photoz"]).fit(X, y, info=info)
    path = save_model(method, tmp_path / "pdf.lbmodel")
    state = json.loads(_members(path)["state.json"])
    node = state["items"]["members_"]["items"][0]
    node["kwargs"]["hidden"] = 10**9  # would allocate gigabytes if built before the check
    _rewrite(path, {"state.json": json.dumps(state)})
    with pytest.raises(ValueError, match=r"pdf.lbmodel: member 0 weights do not fit"):
        load_model(path)


def test_a_bad_contract_field_is_named(tmp_path):
    path, _ = _knn_file(tmp_path)
    contract = json.loads(_members(path)["contract.json"])
    _rewrite(path, {"contract.json": json.dumps({**contract, "bands": "ugriz"})})
    with pytest.raises(ValueError, match=r"knn.lbmodel: field 'bands': expected a list"):
        load_model(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.lbmodel"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(ValueError, match=r"x.lbmodel: not a lensbench model file"):
        load_model(path)


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path):
    path, X = _knn_file(tmp_path)
    before = path.read_bytes()
    info, make = TASKS["photoz"]
    broken = resolve_method("knn-photoz")(n_neighbors=8).fit(*make(), info=info)
    broken.cache_ = object()  # nothing the model format can hold
    with pytest.raises(TypeError, match=r"cache_: cannot save"):
        save_model(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knn.lbmodel"]


def test_the_contract_round_trips_as_json():
    info, make = TASKS["modeling"]
    method = resolve_method("prior-median")().fit(*make(), info=info)
    contract = make_contract(method, info, task_version=1, split_hashes={"test": "cd" * 32},
                             preprocessing={"sky": "subtracted"}, git_commit="abc")
    assert ModelContract.from_json(contract.to_json()) == contract
    assert contract.stamp_shape == info.image_shape and contract.units == "nanomaggies"
    assert contract.targets == info.targets and contract.zero_point == 22.5


def test_state_can_only_set_fitted_attributes(tmp_path):
    """A state naming a method's own attribute (here its predict_score) is refused, so a file
    cannot replace what the method does."""
    path, _ = _knn_file(tmp_path)
    state = json.loads(_members(path)["state.json"])
    state["items"]["predict_score"] = 0.5
    _rewrite(path, {"state.json": json.dumps(state)})
    with pytest.raises(ValueError, match=r"field 'state.predict_score': expected a fitted "
                                         r"attribute"):
        load_model(path)


def test_a_helper_objects_state_cannot_shadow_what_its_class_defines(tmp_path):
    path, _ = _knn_file(tmp_path)
    state = json.loads(_members(path)["state.json"])
    features = next(key for key, node in state["items"].items()
                    if isinstance(node, dict) and node.get("class") == "photoz-features")
    state["items"][features]["state"]["items"]["transform"] = 0.5
    _rewrite(path, {"state.json": json.dumps(state)})
    with pytest.raises(ValueError, match=rf"field 'state.{features}': expected the attributes "
                                         r"of a PhotozFeatures"):
        load_model(path)


def test_a_decompression_bomb_is_refused_before_it_is_inflated(tmp_path):
    path, _ = _knn_file(tmp_path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("sklearn/9.skops", b"\0" * (64 * 2**20))  # 64 MiB of zeros: ~64 kB
    with pytest.raises(ValueError, match=r"sklearn/9.skops claims 67108864 bytes from"):
        load_model(path)


def test_archives_nested_to_multiply_their_inflation_are_refused_before_it(tmp_path):
    # Each archive inflates under 1000-fold alone; nested, the ratios multiply: 40 MiB from
    # a file of a few kB. The whole file's budget refuses it before the inner one inflates.
    manifest = {"format": "lensbench-model/1", "params": {}, "family": "state"}
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("manifest.json", json.dumps({**manifest, "method": "random"}))
        archive.writestr("state.json", b" " * (40 * 2**20) + b"{}")
    path = tmp_path / "nested.lbmodel"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("manifest.json", json.dumps({**manifest, "method": "pixel-logreg"}))
        archive.writestr("state.json", json.dumps(
            {"$": "dict", "items": {"m_": {"$": "method", "file": "nested/0.lbmodel"}}}))
        archive.writestr("nested/0.lbmodel", inner.getvalue())
    assert path.stat().st_size < 20_000
    with pytest.raises(ValueError, match=r"nested.lbmodel:nested/0.lbmodel: its members claim "
                                         r"\d+ bytes, more than the \d+ left of 1000 times"):
        load_model(path)


def test_json_nested_past_any_model_is_a_value_error(tmp_path):
    path, _ = _knn_file(tmp_path)
    _rewrite(path, {"state.json": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError, match=r"knn.lbmodel: .*(nested too deeply|state.json)"):
        load_model(path)


def test_saving_the_model_changes_no_metric_of_a_run(tmp_path, monkeypatch):
    """The same run with and without the model file: byte-identical metrics, one more
    artefact (the model, which loads back to the run's method)."""
    from lensbench.bench import cli, runner
    from lensbench.bench.results import read_results

    argv = ["run", "--suite", "smoke", "--methods", "pixel-logreg", "--no-tracking",
            "--workdir", str(tmp_path)]
    with monkeypatch.context() as patch:
        patch.setattr(runner, "family_of", lambda cls: None)  # as before model files
        assert cli.main(argv) == 0
    assert cli.main(argv) == 0  # same splits, same seed
    before, after = read_results(tmp_path / "results.jsonl")
    assert json.dumps(after.metrics, sort_keys=True) == json.dumps(before.metrics,
                                                                    sort_keys=True)
    assert set(after.artifacts) - set(before.artifacts) == {"model"}
    method, contract = load_model(tmp_path / after.artifacts["model"])
    assert contract.split_hashes == after.split_hashes and contract.task == after.task
    assert method.get_params()["random_state"] == after.seed  # the run's derived seed
    assert contract.git_commit == after.git_commit and contract.method == "pixel-logreg"


def test_a_payload_of_another_method_than_the_manifest_names_is_refused(tmp_path):
    info, make = TASKS["modeling"]
    X, y = make()
    committee = resolve_method("committee-regressor")(**TINY["committee-regressor"]).fit(
        X, y, info=info)
    path = save_model(committee, tmp_path / "c.lbmodel")
    manifest = json.loads(_members(path)["manifest.json"])
    resnet_params = resolve_method("resnet-regressor")().get_params()
    _rewrite(path, {"manifest.json": json.dumps(
        {**manifest, "method": "resnet-regressor",
         "params": {k: v for k, v in manifest["params"].items() if k in resnet_params}})})
    with pytest.raises(ValueError, match=r"c.lbmodel: the payload is not the resnet-regressor"):
        load_model(path)
