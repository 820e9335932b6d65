"""`bench report`: the leaderboard of a suite as Markdown and HTML, written only from the JSONL
result store: a title, the provenance of the runs (command, commits, seeds), then each task's
section as its kind writes it (bench/suites/), with figures."""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime
from pathlib import Path

from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import kind_of
from lensbench.bench.results import Result, read_results
from lensbench.bench.runner import DIRTY, RESULTS_FILE, git_commit
from lensbench.bench.tasks import DEFAULT_PROFILE, get_suite


def latest_results(results: list[Result], suite: str, profile: str) -> list[Result]:
    """The last record of each (run id, task) for this suite and profile."""
    latest: dict[tuple[str, str], Result] = {}
    for result in results:
        if result.suite == suite and result.profile == profile:
            latest[(result.run_id, result.task)] = result
    return list(latest.values())


def fmt(value) -> str:
    """A metric with three decimals; "–" for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def write_report(suite_name: str, *, workdir: Path, out_dir: Path,
                 profile: str = DEFAULT_PROFILE, command: str | None = None) -> list[Path]:
    """reports/<suite>.md and .html (<suite>-<profile> for profiles other than the default) and
    their figures: the provenance of the runs, then each task's section as its kind writes it."""
    suite = get_suite(suite_name)
    kind = kind_of(suite)
    store = workdir / RESULTS_FILE
    results = latest_results(read_results(store), suite.name, profile)
    if not results:
        raise ValueError(f"{store}: no results for suite {suite.name!r} and profile "
                         f"{profile!r}; run `bench run --suite {suite.name} --profile {profile}`")
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# lensbench {kind.report_title}: `{suite.name}` suite ({profile} profile)", "",
          *provenance_lines(suite.name, profile, kind.provenance_results(results), store,
                            command, kind.seed_note),
          *kind.report_notes(suite, profile)]
    figures = []
    stem = suite.name if profile == DEFAULT_PROFILE else f"{suite.name}-{profile}"
    for task in suite.tasks:
        lines, task_figures = kind.report_section(
            suite, task, [r for r in results if r.task == task.name], workdir=workdir,
            out_dir=out_dir, stem=stem, profile=profile)
        md += lines
        figures += task_figures
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
