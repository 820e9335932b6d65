import lensbench.datasets.blas_kernel  # noqa: F401  (before NumPy loads: see its docstring)
