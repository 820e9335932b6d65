"""One table of method names -> "module:Class", resolved lazily (importing a method's module only
when it runs), with did-you-mean errors. Adding a method is one file plus one line here.

The table is also the only way a name read from a file (a checkpoint, a results record) becomes a
class: nothing outside it is ever imported."""

from __future__ import annotations

import difflib
import importlib

METHODS: dict[str, str] = {
    "random": "lensbench.baselines.reference:RandomScorer",
    "pixel-logreg": "lensbench.baselines.reference:PixelLogisticRegression",
    "xgboost": "lensbench.baselines.catalog:GradientBoosting",
    "catalog-nn": "lensbench.baselines.catalog:CatalogueNetwork",
    "arcfinder": "lensbench.baselines.arcfinder:ArcFinder",
    "pca": "lensbench.baselines.pca:PCALensFinder",
    "hog-logreg": "lensbench.baselines.hog:HOGLogisticRegression",
    "knn-photoz": "lensbench.baselines.photoz:KNNPhotoz",
    "xgboost-photoz": "lensbench.baselines.photoz:XGBoostPhotoz",
    "mlp-photoz": "lensbench.baselines.photoz:MLPPhotoz",
    "pdf-mlp-photoz": "lensbench.deep.photoz_pdf:PDFMLPPhotoz",
    "netz-photoz": "lensbench.deep.photoz:NetZPhotoz",
    "netz-fusion-photoz": "lensbench.deep.photoz:NetZFusionPhotoz",
    "resnet": "lensbench.deep.methods:ResNetFinder",
    "committee": "lensbench.deep.methods:CommitteeFinder",
    "deeplens": "lensbench.deep.methods:DeepLensFinder",
    "ae-bgmm": "lensbench.deep.autoencoder:AutoencoderBGMM",
    "ae-outlier": "lensbench.deep.autoencoder:AutoencoderOutlier",
    "two-step": "lensbench.deep.twostep:TwoStep",
    "prior-median": "lensbench.baselines.modeling:PriorMedian",
    "xgboost-modeling": "lensbench.baselines.modeling:GradientBoostingModeling",
    "resnet-regressor": "lensbench.deep.regression:ResNetRegressor",
    "committee-regressor": "lensbench.deep.regression:CommitteeRegressor",
    "lenstronomy-fit": "lensbench.baselines.lensfit:LenstronomyFitter",
}

_NAMES = {target: name for name, target in METHODS.items()}


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def registered_name(cls: type) -> str | None:
    """The name ``cls`` is registered under, or None when it is not registered itself (a
    subclass of a registered class is not)."""
    return _NAMES.get(f"{cls.__module__}:{cls.__qualname__}")


def resolve_method(name: str) -> type:
    """The class registered as ``name``; an unknown name lists the known ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}.{_did_you_mean(name, METHODS)} "
                       f"Known methods: {', '.join(sorted(METHODS))}")
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
