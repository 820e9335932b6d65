"""lensbench.bench: the harness (registry, tasks, runner, metrics, tracking, reports, CLI)."""

import lensbench.datasets.blas_kernel  # noqa: F401  (before NumPy loads: see its docstring)
