"""lensbench.bench: the harness (registry, tasks, runner, metrics, tracking, reports, CLI)."""
