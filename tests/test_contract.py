"""The method contract (baselines/contract.py), checked for every name in the registry on a tiny
task of its kind: parameters round-trip (get_params / set_params / sklearn's clone), ``fit``
returns the method and learns only attributes ending in ``_``, ``predict_score`` gives finite
values of the right shape and leaves the fitted method exactly as it was."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle

import numpy as np
import pytest
import torch
from lensbench.baselines.contract import LENS_MODEL_TARGETS, TaskInfo
from lensbench.baselines.registry import METHODS, resolve_method
from sklearn.base import clone
from test_modeling import toy_lens_models

SIZE = 16
LENS_INFO = TaskInfo(name="tiny", kind="lens-finding", bands=("g", "r", "i"), pixel_scale=0.2,
                     image_shape=(3, SIZE, SIZE), survey="kids")
MODELING_INFO = TaskInfo(name="tiny", kind="modeling", bands=("g", "r", "i", "z"),
                         pixel_scale=0.168, image_shape=(4, SIZE, SIZE), survey="hsc",
                         targets=LENS_MODEL_TARGETS)
PHOTOZ_INFO = TaskInfo(name="tiny", kind="photoz", bands=("u", "g", "r", "i", "z"),
                       pixel_scale=float("nan"), image_shape=(5, 0, 0))
TINY_NET = {"max_epochs": 1, "width": 8, "num_threads": 1, "device": "cpu"}
# The contract, not the schedule, is under test: the fewest epochs, members and trees that
# still run every code path (calibration, TTA, committees of two where the default has more).
TINY = {
    "xgboost": {"n_estimators": 10, "early_stopping_rounds": 5, "n_jobs": 1},
    "catalog-nn": {"max_iter": 20, "hidden_layer_sizes": (8,)},
    "pca": {"calibration_size": 20, "n_components": 4},
    "arcfinder": {"calibration_size": 20},
    "pixel-logreg": {"crop": SIZE, "max_iter": 50},
    "knn-photoz": {"n_neighbors": 8},
    "xgboost-photoz": {"n_estimators": 10, "n_jobs": 1},
    "mlp-photoz": {"max_iter": 20, "n_members": 2, "hidden": 16},
    "pdf-mlp-photoz": {"epochs": 1, "hidden": 16, "n_members": 2, "n_bins": 30},
    "netz-photoz": {"epochs": 1, "stamp_size": 12, "num_threads": 1},
    "netz-fusion-photoz": {"epochs": 1, "stamp_size": 12, "num_threads": 1},
    "resnet": {**TINY_NET, "crop": SIZE},
    "committee": {**TINY_NET, "crop": SIZE, "members": 2, "tta": "mean"},
    "deeplens": {"max_epochs": 1, "num_threads": 1, "device": "cpu"},
    "ae-bgmm": {**TINY_NET, "crop": SIZE, "n_components": 2, "latent": 4},
    "ae-outlier": {**TINY_NET, "crop": SIZE, "n_components": 2, "latent": 4},
    "two-step": {"preselector_params": {"max_iter": 20, "hidden_layer_sizes": (8,)},
                 "cnn": "resnet", "cnn_params": {**TINY_NET, "crop": SIZE}},
    "xgboost-modeling": {"n_estimators": 10, "early_stopping_rounds": 5, "n_jobs": 1},
    "resnet-regressor": {**TINY_NET, "tta": "mean"},
    "committee-regressor": {**TINY_NET, "members": 2},
    "lenstronomy-fit": {"n_particles": 6, "n_iterations": 2, "n_starts": 1,
                        "simplex_iterations": 5},
}


def tiny_lens_finding(n=48, seed=0):
    """3-band 16x16 cutouts: lenses carry a ring of flux, non-lenses do not."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    ring = np.exp(-0.5 * ((np.hypot(xx, yy) - 4) / 1.0) ** 2)
    X = rng.normal(0, 1, (n, 3, SIZE, SIZE)).astype(np.float32)
    X += (y[:, None, None, None] * 2.0 * ring).astype(np.float32)
    return X, y


def tiny_catalogue(n=160, seed=0):
    """Five magnitudes and their errors, with a redshift that reddens g - r."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.7, n)
    mags = 19.0 + rng.normal(0, 0.5, (n, 1)) + np.outer(z, [2.0, 1.5, 0.0, -0.3, -0.5])
    return np.hstack([mags, np.full((n, 5), 0.05)]), z


TASKS = {"lens-finding": (LENS_INFO, tiny_lens_finding),
         "modeling": (MODELING_INFO, lambda: toy_lens_models(48, size=SIZE)),
         "photoz": (PHOTOZ_INFO, tiny_catalogue)}


def _feed(h, value, seen: dict) -> None:
    """Hash ``value`` deterministically: arrays and tensors by dtype, shape and bytes, torch
    modules by their state_dict, containers and objects by their items, in a fixed order.
    ``seen`` holds every container visited (id -> object): kept alive, a temporary (a module's
    state_dict) cannot free its id for a later one to be mistaken for it and skipped."""
    if isinstance(value, torch.nn.Module):
        value = value.state_dict()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        h.update(f"array{value.dtype}{value.shape}".encode())
        h.update(value.tobytes() if value.dtype != object else pickle.dumps(value.tolist()))
        return
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(repr(value).encode())
        return
    if id(value) in seen:
        return
    seen[id(value)] = value
    if isinstance(value, dict):
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key], seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        h.update(type(value).__name__.encode())
        for item in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value):
            _feed(h, item, seen)
    elif hasattr(value, "__dict__"):
        h.update(type(value).__qualname__.encode())
        _feed(h, vars(value), seen)
    else:  # C objects without a __dict__ (e.g. an xgboost booster handle): their pickle
        h.update(pickle.dumps(value))


def fitted_digest(method) -> str:
    """sha256 over every attribute ending in ``_`` (what fit learned), recursively."""
    h = hashlib.sha256()
    _feed(h, {key: value for key, value in vars(method).items() if key.endswith("_")}, {})
    return h.hexdigest()


def test_every_method_has_tiny_parameters():
    """A new registered method must say here how it runs in seconds."""
    assert set(TINY) | {"random", "hog-logreg", "prior-median"} == set(METHODS)


def test_the_digest_sees_a_change_of_fitted_state():
    method = resolve_method("resnet")(**TINY["resnet"])
    X, y = tiny_lens_finding()
    method.fit(X, y, info=LENS_INFO)
    before = fitted_digest(method)
    method.nets_[0].train()  # a module's mode is not fitted state: only its state_dict counts
    assert fitted_digest(method) == before
    with torch.no_grad():
        next(method.nets_[0].parameters()).add_(1e-3)
    assert fitted_digest(method) != before
    counted = resolve_method("random")().fit(X, y)
    before = fitted_digest(counted)
    counted.n_scored_ = 0
    assert fitted_digest(counted) != before


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_follows_the_contract(name):
    if name == "lenstronomy-fit" and importlib.util.find_spec("lenstronomy") is None:
        pytest.skip("lenstronomy is not installed (the dev extra has it)")
    cls = resolve_method(name)
    # __init__ only stores its arguments: params round-trip through clone and set_params.
    defaults = cls().get_params()
    assert clone(cls()).get_params() == defaults
    method = cls(**TINY.get(name, {}))
    params = method.get_params()
    assert clone(method).get_params() == params
    other = cls()
    assert other.set_params(**params) is other and other.get_params() == params
    assert set(cls.search_space) <= set(defaults), "search_space names unknown params"
    for spec in cls.search_space.values():
        assert spec["type"] in ("float", "int", "categorical")

    kind = cls.kinds[0]
    info, make = TASKS[kind]
    X, y = make()
    n_train = len(X) * 2 // 3
    assert method.decline(info) is None
    before = set(vars(method))
    assert method.fit(X[:n_train], y[:n_train], info=info) is method
    learned = set(vars(method)) - before
    assert learned and all(key.endswith("_") for key in learned)
    assert method.get_params() == params  # fit changes no parameter

    rows = 2 if getattr(method, "per_lens_fit", False) else len(X) - n_train
    fitted = fitted_digest(method)
    scores = np.asarray(method.predict_score(X[n_train:n_train + rows]))
    shape = (rows, len(LENS_MODEL_TARGETS)) if kind == "modeling" else (rows,)
    assert scores.shape == shape and np.isfinite(scores).all()
    assert fitted_digest(method) == fitted, "predict_score changed the fitted method"
    assert set(vars(method)) - before == learned
