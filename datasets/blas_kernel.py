"""Pin OpenBLAS's x86 kernels to Haswell's (AVX2) on an AVX-512 machine, before NumPy loads it.

OpenBLAS chooses its kernels by CPU when it loads, and its AVX-512 (SkylakeX) matrix products
round differently from its AVX2 ones. The real-lens splits resample their HST images by matrix
products (datasets/degrade.py: rebin_flux), so on an AVX-512 machine real-hsc v9's and
real-vis v9's real splits came out with other bytes
(tests/test_golden_hashes.py failed there and passed with ``OPENBLAS_CORETYPE=Haswell``). Every
lensbench package imports this first, so `bench` and the tests make the same bytes on either
kind of machine. It does nothing where the user chose a kernel (``OPENBLAS_CORETYPE`` set), where
NumPy is already imported (too late: say ``OPENBLAS_CORETYPE=Haswell`` yourself), or on a CPU
without both AVX2 and AVX-512 (there OpenBLAS picks an AVX2 or older kernel anyway).
"""

from __future__ import annotations

import os
import sys


def pin_openblas_kernel(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Set ``OPENBLAS_CORETYPE=Haswell`` when it can still act and is needed; True if set."""
    if "numpy" in sys.modules or "OPENBLAS_CORETYPE" in os.environ:
        return False
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: no /proc/cpuinfo
        return False
    if "avx2" in flags and "avx512f" in flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
        return True
    return False


pin_openblas_kernel()
