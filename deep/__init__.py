"""Torch lens finders (registered in lensbench.baselines.registry): ``resnet``,
``committee``, ``deeplens`` (methods.py), ``ae-bgmm`` / ``ae-outlier`` (autoencoder.py),
``two-step`` (twostep.py). Networks in nets.py, the one training loop in train.py, preprocessing
and augmentation in preprocess.py, committees/TTA/temperature scaling in committee.py,
checkpoints in checkpoint.py, throughput in bench.py (``python -m lensbench.deep.bench``). No
mlflow, no optuna, no lensbench.bench imports (two-step resolves its parts through the
registry)."""

import lensbench.datasets.blas_kernel  # noqa: F401  (before NumPy loads: see its docstring)
