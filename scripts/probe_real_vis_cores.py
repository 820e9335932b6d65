"""Probe (not a committed report): real-vis v9 with integrated Sersic cores (the real-vis v10 that
moving hsc-holismokes off VERSION_1_CORES would make), the default committee, seed 0; its report
(SLACS scores, threshold) in WORKDIR/report to set beside reports/real.md's sampled-core run.

    python scripts/probe_real_vis_cores.py WORKDIR    (about 47 min on 2 cores)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lensbench.bench import tasks
from lensbench.bench.report import write_report
from lensbench.bench.runner import run_suite
from lensbench.datasets.config import CORE_REFINEMENT

task = dataclasses.replace(tasks.REAL_VIS, version=10,
                           config=tasks.REAL_VIS.config.replace(core_refinement=CORE_REFINEMENT))
suite = dataclasses.replace(tasks.get_suite("real"), tasks=(task,))
tasks.SUITES["real"] = suite  # the report reads the suite by name
workdir = Path(sys.argv[1])
run_suite(suite, profile="default", seed=0, workdir=workdir, methods=["committee"])
write_report("real", workdir=workdir, out_dir=workdir / "report", profile="default")
