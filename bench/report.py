"""`bench report`: the leaderboard of a suite as Markdown and HTML, written only from the JSONL
result store: a title, the provenance of the runs (command, commits, seeds), then each task's
section as its kind writes it (bench/suites/), with figures."""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import kind_of
from lensbench.bench.results import Result, read_results
from lensbench.bench.runner import DIRTY, RESULTS_FILE, derive_seed, git_commit
from lensbench.bench.tasks import DEFAULT_PROFILE, Suite, Task, all_tasks, get_suite
from lensbench.datasets.files import atomic_write_text


def latest_results(results: list[Result], suite: str, profile: str, seed: int) -> list[Result]:
    """The last record of each (run id, task) for this suite, profile and suite seed (a record
    older than the ``suite_seed`` field is of the seed its method seed derives from)."""
    latest: dict[tuple[str, str], Result] = {}
    for result in results:
        if result.suite == suite and result.profile == profile and (
                result.suite_seed == seed if result.suite_seed is not None
                else result.seed == derive_seed(seed, result.method, result.task)):
            latest[(result.run_id, result.task)] = result
    return list(latest.values())


def current_split_hashes(workdir: Path, task: Task) -> set[str]:
    """Content hashes of the splits of ``task``'s current version in ``workdir/splits``."""
    from lensbench.bench.splits import version_prefix
    from lensbench.datasets.storage import load_split, split_is_complete

    return {load_split(path, verify=False).content_hash
            for path in sorted((workdir / "splits").glob(f"{version_prefix(task)}*"))
            if split_is_complete(path)}


def on_current_splits(results: list[Result], workdir: Path, tasks: list[Task]) -> list[Result]:
    """The records of ``results`` whose test split is one of their task's current version in
    ``workdir``: a workdir reused across a version bump holds runs on both versions' splits,
    and a report's section is of one test set. A task with no current split in the workdir
    (records read without their splits) keeps its records."""
    current = {task.name: current_split_hashes(workdir, task) for task in tasks}
    return [r for r in results
            if not current.get(r.task) or r.split_hashes.get("test") in current[r.task]]


def stored_seeds(results: list[Result], suite: str, profile: str) -> list[int]:
    """The suite seeds the records of ``suite`` and ``profile`` were run at (those that say)."""
    return sorted({r.suite_seed for r in results if r.suite == suite and r.profile == profile
                   and r.suite_seed is not None})


def report_seed(results: list[Result], suite: str, profile: str, store: Path,
                seed: int | None) -> int:
    """The suite seed a report is of: ``seed`` where given, else the only one the store holds
    for this suite and profile; a report never mixes seeds (its "produced by" command has one)."""
    if seed is not None:
        return seed
    seeds = stored_seeds(results, suite, profile)
    if len(seeds) > 1:
        raise ValueError(f"{store}: suite {suite!r}, profile {profile!r} has runs at the seeds "
                         f"{', '.join(map(str, seeds))}; choose one with --seed")
    return seeds[0] if seeds else 0  # records older than suite_seed: seed 0, the default


def fmt(value) -> str:
    """A metric with three decimals; "–" for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def write_report(suite_name: str, *, workdir: Path, out_dir: Path,
                 profile: str = DEFAULT_PROFILE, command: str | None = None,
                 seed: int | None = None) -> list[Path]:
    """reports/<suite>.md and .html (<suite>-<profile> for profiles other than the default) and
    their figures: the provenance of the runs, then each task's section as its kind writes it.
    The runs are those of one suite seed (:func:`report_seed`)."""
    suite = get_suite(suite_name)
    kind = kind_of(suite)
    store = workdir / RESULTS_FILE
    stored = read_results(store)
    seed = report_seed(stored, suite.name, profile, store, seed)
    results = latest_results(on_current_splits(stored, workdir, suite.tasks), suite.name,
                             profile, seed)
    if not results and any(r.suite == suite.name and r.profile == profile for r in stored):
        raise ValueError(f"{store}: no results for suite {suite.name!r} and profile {profile!r} "
                         f"at --seed {seed}")
    if not results:
        others = sorted({r.profile for r in stored if r.suite == suite.name})
        hint = (f"it has the profile(s) {', '.join(others)}: `bench report --suite {suite.name} "
                f"--profile {others[0]}`" if others else
                f"run `bench run --suite {suite.name} --profile {profile}` first")
        raise ValueError(f"{store}: no results for suite {suite.name!r} and profile "
                         f"{profile!r}; {hint}")
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
            f"report commit {short_commit(git_commit() or 'unknown')}",
            software_line(results), versions_line(reported_tasks(get_suite(suite), results))]


def reported_tasks(suite: Suite, results: list[Result]) -> Suite:
    """``suite`` with the tasks that ``results`` ran (all of them when none did): a profile
    without a size for a task (the metcalf compare profile has no metcalf-space) neither runs
    nor reports it, so its version does not pin the report's bytes."""
    ran = tuple(task for task in suite.tasks if any(r.task == task.name for r in results))
    return dataclasses.replace(suite, tasks=ran or suite.tasks)


# The packages a report header names (keys of Result.versions), in this order.
REPORTED_PACKAGES = ("python", "numpy", "torch", "scikit-learn", "xgboost", "astropy")


def software_line(results: list[Result]) -> str:
    """The header line naming the versions the runs used (each value, where runs differ), torch's
    thread count in their processes (with another count a torch run can differ in its last
    digits) and the machines' arithmetic (on another, the simulated splits have other bytes:
    README, Reproducibility)."""
    packages = []
    for name in REPORTED_PACKAGES:
        values = sorted({r.versions[name] for r in results if name in r.versions})
        if values:
            packages.append(f"{name} {' / '.join(values)}")
    threads = sorted({r.threads["torch"] for r in results if "torch" in r.threads})
    arithmetics = sorted({r.versions.get("arithmetic", "not recorded") for r in results})
    return (f"- software of the runs: {', '.join(packages) or 'not recorded'}; torch threads "
            f"{' / '.join(map(str, threads)) if threads else 'not recorded'}; arithmetic "
            f"{' / '.join(arithmetics) if arithmetics else 'not recorded'} (`bench data probe`)")


VERSIONS_LABEL = "- task versions: "


def simulated(task: Task) -> bool:
    """Whether the simulator makes the task's splits (photo-z tasks read real catalogues)."""
    return task.photoz is None


def versions_line(suite: Suite) -> str:
    """The header line stating the versions that pin the bytes of the report's splits (each
    task's, and the simulator's when it makes them); `bench report --check` reads it back."""
    line = VERSIONS_LABEL + ", ".join(f"{task.name} v{task.version}" for task in suite.tasks)
    if any(simulated(task) for task in suite.tasks):
        from lensbench.datasets.simulate import SIMULATOR_VERSION

        line += f"; simulator v{SIMULATOR_VERSION}"
    return line + (" (a version pins its splits' bytes; `bench report --check` lists the reports "
                   "made at versions the current code no longer has)")


def short_commit(commit: str) -> str:
    """The first 12 digits of a commit, keeping its DIRTY mark."""
    return commit[:12] + (DIRTY if commit.endswith(DIRTY) else "")


def run_command(suite_name: str, profile: str, results: list[Result], seeds: list[int]) -> str:
    """The `bench run` command line that produced ``results``: ``--methods`` when they are not
    the suite's defaults, ``--param`` for parameters other than the suite's for the result's
    task (``Suite.params_for``). Results run with different parameters came from different
    commands: one is given for each, joined by "` and `" (the report line quotes each). A
    command whose torch runs all recorded one thread count sets it (``OMP_NUM_THREADS=N``): a
    torch run's last digits depend on it."""
    suite = get_suite(suite_name)
    base = f"bench run --suite {suite_name} --profile {profile} --seed " \
           f"{','.join(map(str, seeds))}"
    tasks = {task.name: task for task in suite.tasks}
    commands: dict[tuple[str, ...], list[str]] = {}  # the --param options -> their methods
    accepted: dict[str, dict | None] = {}  # method -> the params it takes (None: unknown)
    threads: dict[tuple[str, ...], set[int]] = {}  # the --param options -> torch thread counts
    for r in results:
        # Keys the method does not take (the design suite's variant annotations) are no option.
        if r.method not in accepted:
            try:
                accepted[r.method] = resolve_method(r.method)().get_params()
            except (KeyError, ImportError):  # a method no longer registered: keep all params
                accepted[r.method] = None
        takes = accepted[r.method] if accepted[r.method] is not None else r.params
        suite_params = suite.params_for(profile, tasks.get(r.task)).get(r.method, {})
        # A run made before the profile set a key ran with the method's own default for it.
        ran_with = {**{key: takes[key] for key in suite_params if key in takes}, **r.params}
        options = tuple(sorted(f"{r.method}.{key}={value}" for key, value in ran_with.items()
                               if key in takes and suite_params.get(key) != value))
        methods = commands.setdefault(options, [])
        if r.method not in methods:
            methods.append(r.method)
        if "torch" in r.threads:
            threads.setdefault(options, set()).add(r.threads["torch"])
    lines = []
    for options, methods in commands.items():
        counts = threads.get(options, set())
        command = f"OMP_NUM_THREADS={min(counts)} {base}" if len(counts) == 1 else base
        if set(methods) != set(suite.methods_for(profile)):
            command += f" --methods {','.join(methods)}"
        lines.append(command + "".join(f" --param {option}" for option in options))
    return "` and `".join(lines)


def write_markdown_and_html(md: list[str], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.md`` and ``<stem>.html`` (figures embedded) in ``out_dir``."""
    html_text = markdown_to_html("\n".join(md), out_dir)
    # each file whole or not at all: a crash or an interrupt leaves the previous report
    return [atomic_write_text(out_dir / f"{stem}.md", "\n".join(md) + "\n"),
            atomic_write_text(out_dir / f"{stem}.html", html_text)]


IMAGE = re.compile(r"!\[[^\]]*\]\((?P<name>[^()]+)\)")


def _own_figure(folder: Path, name: str) -> bool:
    path = folder / name
    return (Path(name).name == name and name not in (".", "..") and name.endswith(".png")
            and path.is_file() and not path.is_symlink())


def markdown_to_html(text: str, folder: Path) -> str:
    """A small converter for the report's own Markdown (headings, lists, tables, images); the
    figures are embedded so the HTML file stands alone. Only a PNG file in ``folder`` itself,
    named without a path, is embedded; another image line is shown as text: text from a results
    store could otherwise copy any file on the disk into a report meant to be shared."""
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
        elif (figure := IMAGE.fullmatch(line)) and _own_figure(folder, figure["name"]):
            data = base64.b64encode((folder / figure["name"]).read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}" width="560">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


# ----------------------------------------------------------------------------- bench report --check
TITLE = re.compile(r"^# lensbench .*: `(?P<suite>[^`]+)` suite \((?P<profile>\S+) profile\)$")
SECTION = re.compile(r"^## (?P<task>\S+) \(v(?P<version>\d+)\)$")
ROLE_HASH = re.compile(r"(\w+) `([0-9a-f]{12})`")
# Simulated cutouts (train + test) a check may remake to verify a header without a versions line:
# a smoke profile is remade in seconds, a default one takes minutes.
CHEAP_CUTOUTS = 1024


def check_reports(folder: Path) -> list[tuple[Path, str | None]]:
    """Every report (``*.md``) in ``folder`` with why it is stale, or None when the current code
    still makes the splits it was made from."""
    paths = sorted(folder.glob("*.md"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no reports (*.md) to check")
    return [(path, stale_reason(path)) for path in paths]


def stale_reason(path: Path) -> str | None:
    """Why the report at ``path`` was made from splits the current code no longer makes, or
    None. With a versions line (tests/test_golden_hashes.py pins each version's bytes) its
    versions are compared with the current ones; an older header is checked by its split hashes
    when remaking them is cheap, and otherwise cannot be verified (stale)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = TITLE.match(lines[0]) if lines else None
    if title is None:
        return "not a lensbench report: its first line names no suite and profile"
    try:
        suite = get_suite(title["suite"])
    except KeyError:
        return f"suite {title['suite']!r} no longer exists"
    stated = next((line for line in lines if line.startswith(VERSIONS_LABEL)), None)
    if stated is not None:
        sections = {match["task"] for line in lines if (match := SECTION.match(line))}
        return stale_by_version(stated, sections)
    return stale_by_hash(suite, title["profile"], lines)


def stale_by_version(line: str, sections: set[str] = frozenset()) -> str | None:
    """Why the versions a header ``line`` states are not the current ones, or None. Where the
    report has task sections (``sections``, their names), only their tasks count: headers
    written before the line named only the tasks a report covers listed every task of its
    suite (reports/metcalf-compare.md names metcalf-space, which the compare profile never
    runs)."""
    from lensbench.datasets.simulate import SIMULATOR_VERSION

    tasks_part, _, simulator_part = line[len(VERSIONS_LABEL):].split(" (")[0].partition(";")
    stated = {name: int(version) for name, version in re.findall(r"(\S+) v(\d+)", tasks_part)
              if not sections or name in sections}
    if not stated:
        return "its task versions line names no task"
    current = all_tasks()
    reasons = [f"task {name} no longer exists" if name not in current else
               f"{name} v{version}, now v{current[name].version}"
               for name, version in stated.items()
               if name not in current or current[name].version != version]
    if any(simulated(current[name]) for name in stated if name in current):
        simulator = re.search(r"simulator v(\d+)", simulator_part)
        if simulator is None:
            reasons.append("the header states no simulator version")
        elif int(simulator[1]) != SIMULATOR_VERSION:
            reasons.append(f"simulator v{simulator[1]}, now v{SIMULATOR_VERSION}")
    return "; ".join(reasons) or None


def stated_split_hashes(lines: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """task -> (version, role -> 12-digit content hash) from the sections of a report."""
    stated: dict[str, tuple[int, dict[str, str]]] = {}
    task = None
    for line in lines:
        if section := SECTION.match(line):
            task = section["task"]
            stated[task] = (int(section["version"]), {})
        elif task is not None and line.startswith("Splits"):
            stated[task][1].update(ROLE_HASH.findall(line))
    return stated


def stale_by_hash(suite: Suite, profile: str, lines: list[str]) -> str | None:
    """A header without a versions line (written before the versions were pinned, when a version
    did not yet fix its bytes): each task's split hashes against those the current code makes
    at that profile, remade in a temporary folder when that is cheap."""
    stated = stated_split_hashes(lines)
    if not any(hashes for _, hashes in stated.values()):
        return "cannot verify: the header states neither task versions nor split hashes"
    current = all_tasks()
    reasons = []
    for name, (version, hashes) in stated.items():
        task = current.get(name)
        if task is None:
            reasons.append(f"task {name} no longer exists")
        elif task.version != version:
            reasons.append(f"{name} v{version}, now v{task.version}")
        elif profile not in task.sizes:
            reasons.append(f"{name} has no profile {profile!r} now")
        elif simulated(task) and sum(task.size(profile)) > CHEAP_CUTOUTS:
            reasons.append(f"cannot verify {name}: the header states no versions and its "
                           f"{profile} splits ({sum(task.size(profile))} cutouts) are too large "
                           f"to remake for a check")
        else:
            reasons += changed_hashes(suite, task, profile, hashes)
    return "; ".join(reasons) or None


def changed_hashes(suite: Suite, task: Task, profile: str, stated: dict[str, str]) -> list[str]:
    """The roles whose stated hash differs from the one the current code makes (the task's
    splits remade by its kind in a temporary folder), or why that cannot be told."""
    try:
        with tempfile.TemporaryDirectory(prefix="lensbench-check-") as folder:
            splits = kind_of(suite).splits(task, profile, Path(folder), log=lambda *_: None)
            made = {role: value[:12] for role, value in getattr(splits, "hashes", {}).items()}
    except (OSError, ValueError) as error:  # a missing real-data file, for one
        message = str(error)  # a download error names its URL and cache: the start says enough
        return [f"cannot verify {task.name}: "
                f"{message if len(message) <= 160 else message[:160] + '...'}"]
    if not made:
        return [f"cannot verify {task.name}: its kind names no split hashes"]
    return [f"{task.name} {role} split `{value}`, now `{made.get(role, 'not made')}`"
            for role, value in stated.items() if made.get(role) != value]
