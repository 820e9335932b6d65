"""Model files (baselines/persistence.py): every registered method that can be fitted is saved
and loaded back to identical predictions, on the tiny tasks of tests/test_contract.py; the
contract travels with it; a model file never runs code and bad ones are refused naming the
file and the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lensbench.baselines.persistence import (
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
