"""`bench report`: the leaderboard of a suite in the form of Metcalf et al. (2019)'s results table,
as Markdown and HTML, with a ROC overlay per task. Written only from the JSONL result store."""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from lensbench.baselines.registry import resolve_method
from lensbench.bench.results import Result, canonical_run_id, read_results
from lensbench.bench.runner import DIRTY, RESULTS_FILE, ROTATION_SUBSET, git_commit
from lensbench.bench.tasks import get_suite, kind_handler

# (column title, metric key) of the rotation-invariance check, in every lens-finding table.
ROTATION_COLUMNS = [("rot. mean abs(ds)", "rotation/mean_abs_change"),
                    ("rot. max abs(ds)", "rotation/max_abs_change"),
                    ("rot. TPR0 spread", "rotation/tpr0_spread")]
COLUMNS = [("AUROC", "auroc"), ("TPR0", "tpr0"), ("TPR10", "tpr10"),
           ("TPR@FPR1e-2", "tpr_fpr1e-2"), ("TPR@FPR1e-3", "tpr_fpr1e-3"),
           ("TPR@FPR1e-4", "tpr_fpr1e-4"), ("ECE", "ece"), *ROTATION_COLUMNS,
           ("member spread", "committee_spread_mean")]


def latest_results(results: list[Result], suite: str, profile: str) -> list[Result]:
    """The last record of each (run id, task) for this suite and profile."""
    latest: dict[tuple[str, str], Result] = {}
    for result in results:
        if result.suite == suite and result.profile == profile:
            latest[(result.run_id, result.task)] = result
    return list(latest.values())


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def task_table(results: list[Result]) -> list[str]:
    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: -r.metrics["auroc"])
    real = any("real/known_lenses" in r.metrics for r in ok)
    header = ["method", *[name for name, _ in COLUMNS], "lenses / non-lenses", "train",
              "fit time (s)"]
    if real:
        header += ["known lenses > FPR1e-3 threshold", "real non-lenses above"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok:
        m = r.metrics
        cells = [f"`{r.run_id}`", *[_fmt(m.get(key)) for _, key in COLUMNS],
                 f"{int(m['n_lenses'])} / {int(m['n_nonlenses'])}", str(r.n_train),
                 f"{r.fit_time_s:.1f}"]
        if real:
            cells += [f"{int(m.get('real/recovered_fpr1e-3', 0))} / "
                      f"{int(m.get('real/known_lenses', 0))}",
                      f"{int(m.get('real/nonlenses_above_fpr1e-3', 0))}"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        if r.status != "ok":
            lines.append(f"| `{r.run_id}` | {r.status}: {r.error_line[:80]} |" + " |" *
                         (len(header) - 2))
    return lines


# diag/* keys in the order and words of the report; "cnn_" keys are a chain's CNN's own.
DIAGNOSTIC_NAMES = {"fraction_to_cnn": "fraction of test cutouts reaching the CNN",
                    "train_fraction_to_cnn": "of training cutouts",
                    "members": "members", "best_epoch_mean": "mean best epoch",
                    "temperature": "temperature",
                    "val_ece_before_calibration": "validation ECE before calibration",
                    "val_ece_after_calibration": "after"}


def diagnostics_lines(results: list[Result]) -> list[str]:
    """What methods report about themselves (``diag/*``): calibration, committee size, the share
    of cutouts a two-step chain passes to its CNN."""
    lines = []
    for r in sorted(results, key=lambda r: r.run_id):
        diag = {k.removeprefix("diag/"): v for k, v in r.metrics.items() if k.startswith("diag/")}
        order = list(DIAGNOSTIC_NAMES)
        diag = dict(sorted(diag.items(), key=lambda kv: (
            kv[0].startswith("cnn_"), order.index(kv[0].removeprefix("cnn_"))
            if kv[0].removeprefix("cnn_") in order else len(order), kv[0])))
        if r.status == "ok" and diag:
            parts = [f"{DIAGNOSTIC_NAMES.get(k.removeprefix('cnn_'), k)}"
                     f"{' (CNN)' if k.startswith('cnn_') else ''} {v:.3g}"
                     for k, v in diag.items()]
            lines.append(f"- `{r.run_id}`: " + "; ".join(parts))
    return ["", "Method diagnostics:", "", *lines] if lines else []


def known_lens_score_lines(results: list[Result]) -> list[str]:
    """Each method's scores of the known lenses beside its FPR-1e-3 threshold."""
    lines = []
    for r in sorted((r for r in results if r.status == "ok"), key=lambda r: r.run_id):
        scores = [v for k, v in sorted((int(k.removeprefix("real/score/lens")), v)
                                       for k, v in r.metrics.items()
                                       if k.startswith("real/score/lens"))]
        if scores and "real/threshold_fpr1e-3" in r.metrics:
            lines.append(f"- `{r.run_id}`: threshold {r.metrics['real/threshold_fpr1e-3']:.3g};"
                         f" known-lens scores " + ", ".join(f"{v:.3g}" for v in scores))
    return ["", "Scores of the known lenses (in the order of the real split):", "", *lines] \
        if lines else []


def compare_goal_lines(results: list[Result], workdir: Path, profile_params: dict[str, dict]
                       ) -> list[str]:
    """The issue-6 goal of the compare profile, checked on the unrounded metrics, with 95%
    stratified-bootstrap intervals of the committee's AUROC and TPR10 and of its paired change
    against DeepLens (the test set is a few thousand cutouts, so the third decimal is noise).
    ``profile_params``: the suite's parameters for the profile (method -> params)."""
    from lensbench.bench.design import paired_bootstrap, stored_test_scores
    from lensbench.bench.tasks import COMPARE_GOAL

    ok = [r for r in results if r.status == "ok"]

    def pick(name: str) -> Result | None:
        # The run with the profile's own parameters when there is one (a leaderboard may also
        # hold runs of other configurations), else the last run of that method.
        runs = [r for r in ok if r.method == name]
        configured = canonical_run_id(name, profile_params.get(name, {}))
        return next((r for r in runs if r.run_id == configured), runs[-1] if runs else None)

    method, peer = pick(COMPARE_GOAL["method"]), pick(COMPARE_GOAL["peer"])
    if method is None or peer is None:
        return []
    m, p = method.metrics, peer.metrics
    checks = [(f"TPR0 {m['tpr0']:.3f} > {p['tpr0']:.3f}", m["tpr0"] > p["tpr0"]),
              (f"TPR10 {m['tpr10']:.3f} > {p['tpr10']:.3f}", m["tpr10"] > p["tpr10"]),
              (f"AUROC {m['auroc']:.4f} >= {COMPARE_GOAL['min_auroc']}",
               m["auroc"] >= COMPARE_GOAL["min_auroc"])]
    lines = ["", f"Goal (issue 6): `{method.run_id}` against `{peer.run_id}`: "
             + "; ".join(f"{text}: {'yes' if passed else 'NO'}" for text, passed in checks)]
    own, other = stored_test_scores(method, workdir), stored_test_scores(peer, workdir)
    if own is not None and other is not None and own[2] == other[2]:
        alone = paired_bootstrap(own[0], own[1], None)
        change = paired_bootstrap(own[0], own[1], other[1])
        lines.append(
            "95% bootstrap intervals (test set resampled within each class): "
            + "; ".join(f"{key.upper()} {alone[key][1]:.4f} to {alone[key][2]:.4f}"
                        for key in ("auroc", "tpr10"))
            + f"; minus `{peer.run_id}`: "
            + "; ".join(f"{key.upper()} {change[key][0]:+.4f} [{change[key][1]:+.4f}, "
                        f"{change[key][2]:+.4f}]" for key in ("auroc", "tpr10")))
    return lines


def roc_figure(results: list[Result], workdir: Path, path: Path, title: str) -> Path | None:
    from lensbench.bench.metrics import roc_points
    from lensbench.bench.plots import plot_roc_curves

    curves = {}
    for r in sorted(results, key=lambda r: -r.metrics.get("auroc", 0)):
        scores_path = r.artifacts.get("scores") if r.status == "ok" else None
        if scores_path and (workdir / scores_path).exists():
            data = np.load(workdir / scores_path)
            roc = roc_points(data["labels"], data["scores"])
            curves[f"{r.run_id} (AUROC {r.metrics['auroc']:.3f})"] = (roc.fpr, roc.tpr)
    if not curves:
        return None
    return plot_roc_curves(curves, path, title=title)


def write_report(suite_name: str, *, workdir: Path, out_dir: Path, profile: str = "default",
                 command: str | None = None) -> list[Path]:
    suite = get_suite(suite_name)
    store = workdir / RESULTS_FILE
    results = latest_results(read_results(store), suite.name, profile)
    if not results:
        raise ValueError(f"{store}: no results for suite {suite.name!r} and profile "
                         f"{profile!r}; run `bench run --suite {suite.name} --profile {profile}`")
    writer = kind_handler(suite, "write_report")
    if writer is not None:
        return writer(suite, results, store=store, workdir=workdir, out_dir=out_dir,
                      profile=profile, command=command)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# lensbench leaderboard: `{suite.name}` suite ({profile} profile)", "",
          *provenance_lines(suite.name, profile, results, store, command,
                            " (every method seed derives from it)"),
          "- metrics as defined by Metcalf et al. (2019): TPR0 and TPR10 depend on the number "
          "of non-lenses, so it is given beside them; TPR at fixed FPR does not.",
          f"- rotation columns: the first {ROTATION_SUBSET} test cutouts scored under the 8 "
          "dihedral transforms (rotations by 90 deg and flips): mean and maximum |score change| "
          "per cutout (averaged), and the spread of TPR0 across the transforms; 0 is a perfectly "
          "invariant method. Member spread: the mean standard deviation of a committee's "
          "member scores.", ""]
    figures = []
    # reports/<suite>.md for the default profile, reports/<suite>-<profile>.md for the others
    stem = suite.name if profile == "default" else f"{suite.name}-{profile}"
    for task in suite.tasks:
        task_results = [r for r in results if r.task == task.name]
        if not task_results:
            continue
        hashes = task_results[0].split_hashes
        md += [f"## {task.name} (v{task.version})", "", task.description, "",
               f"Splits: train `{hashes.get('train', '?')[:12]}`, test "
               f"`{hashes.get('test', '?')[:12]}` (content hashes).", ""]
        md += task_table(task_results)
        md += diagnostics_lines(task_results)
        if profile == "compare":
            md += compare_goal_lines(task_results, workdir, suite.params_for(profile))
        if task.real_lenses:
            md += ["", "Known real lenses: SLACS HST lenses degraded to the survey, scored against "
                   "the threshold that gives FPR 1e-3 on the simulated test set. The real "
                   "non-lenses are COSMOS field galaxies, much fainter than the SLACS lenses, so "
                   "brightness alone separates them: read the recovered count, not an AUROC."]
            md += known_lens_score_lines(task_results)
        figure = roc_figure(task_results, workdir, out_dir / f"{stem}-{task.name}-roc.png",
                            f"{task.name} ({profile} profile)")
        if figure is not None:
            md += ["", f"![ROC curves]({figure.name})"]
            figures.append(figure)
        md.append("")
    return [*write_markdown_and_html(md, out_dir, stem), *figures]


def provenance_lines(suite: str, profile: str, results: list[Result], store: Path,
                     command: str | None, seed_note: str = "") -> list[str]:
    """The report lines naming the command, date, store, suite seed and commits behind it. The
    run command shows the methods and every parameter that differs from the suite's own, so a
    reader can reproduce the runs exactly."""
    seeds = sorted({r.suite_seed for r in results if r.suite_seed is not None})
    commits = sorted({r.git_commit or "unknown" for r in results})
    return [f"- written by: `{command or f'bench report --suite {suite}'}` on "
            f"{datetime.now(UTC).date().isoformat()}, from `{store}`",
            f"- produced by: `{run_command(suite, profile, results, seeds)}`{seed_note}",
            f"- lensbench commit(s) of the runs: {', '.join(map(short_commit, commits))}; "
            f"report commit {short_commit(git_commit() or 'unknown')}"]


def short_commit(commit: str) -> str:
    """The first 12 digits of a commit, keeping its DIRTY mark."""
    return commit[:12] + (DIRTY if commit.endswith(DIRTY) else "")


def run_command(suite_name: str, profile: str, results: list[Result], seeds: list[int]) -> str:
    """The `bench run` command line that produced ``results``: ``--methods`` when they are not
    the suite's defaults, ``--param`` for parameters other than the suite's. Results run with
    different parameters came from different commands: one is given for each, joined by "` and
    `" (the report line quotes each)."""
    suite = get_suite(suite_name)
    base = f"bench run --suite {suite_name} --profile {profile} --seed " \
           f"{','.join(map(str, seeds))}"
    defaults = suite.params_for(profile)
    commands: dict[tuple[str, ...], list[str]] = {}  # the --param options -> their methods
    accepted: dict[str, dict | None] = {}  # method -> the params it takes (None: unknown)
    for r in results:
        # Keys the method does not take (the design suite's variant annotations) are no option.
        if r.method not in accepted:
            try:
                accepted[r.method] = resolve_method(r.method)().get_params()
            except (KeyError, ImportError):  # a method no longer registered: keep all params
                accepted[r.method] = None
        takes = accepted[r.method] if accepted[r.method] is not None else r.params
        suite_params = defaults.get(r.method, {})
        # A run made before the profile set a key ran with the method's own default for it.
        ran_with = {**{key: takes[key] for key in suite_params if key in takes}, **r.params}
        options = tuple(sorted(f"{r.method}.{key}={value}" for key, value in ran_with.items()
                               if key in takes and suite_params.get(key) != value))
        methods = commands.setdefault(options, [])
        if r.method not in methods:
            methods.append(r.method)
    lines = []
    for options, methods in commands.items():
        command = base
        if set(methods) != set(suite.methods_for(profile)):
            command += f" --methods {','.join(methods)}"
        lines.append(command + "".join(f" --param {option}" for option in options))
    return "` and `".join(lines)


def write_markdown_and_html(md: list[str], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.md`` and ``<stem>.html`` (figures embedded) in ``out_dir``."""
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    html_path = out_dir / f"{stem}.html"
    html_path.write_text(markdown_to_html("\n".join(md), out_dir), encoding="utf-8")
    return [md_path, html_path]


def markdown_to_html(text: str, folder: Path) -> str:
    """A small converter for the report's own Markdown (headings, lists, tables, images); the
    figures are embedded so the HTML file stands alone."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [row for row in table if not set(row.replace("|", "")) <= set("-")]
            cells = [[html.escape(c.strip().strip("`")) for c in row.strip("|").split("|")]
                     for row in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                           for row in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1: line.rindex(")")]
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}" width="560">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
