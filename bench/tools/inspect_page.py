"""`bench inspect`: grade scan candidates by eye in a self-contained HTML page.

:func:`write_page` turns a ranked candidate table (``bench scan`` output) into one HTML file with
the Lupton colour composites embedded as PNG data URIs (no server, no network: it opens from
disk and can be mailed), ranked and paged, with score and committee spread under each stamp.
A person grades with the keyboard:

====================  ==============================================
``A`` ``B`` ``C``     grade the current candidate (then move on)
``N`` or ``0``        not a lens
``U`` / Backspace     clear the grade
arrows, ``J`` ``K``   previous / next candidate
``[`` ``]``, PgUp/Dn  previous / next page
``E``                 export the grades as CSV (``id,rank,score,grade``)
====================  ==============================================

Grades are kept in the browser's localStorage (keyed by the table's hash), so closing the page
loses nothing. :func:`merge_grades` adds an exported file to the candidate table as a ``grade``
column (``A``, ``B``, ``C``, ``not_lens`` or empty).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from lensbench.datasets.files import atomic_open

GRADES = ("A", "B", "C", "not_lens")
_KEYS = {"a": "A", "b": "B", "c": "C", "n": "not_lens", "0": "not_lens"}


def read_candidates(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a candidate table; it needs at least id, score and source."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    missing = [c for c in ("id", "score", "source") if c not in columns]
    if missing:
        raise ValueError(f"{path}: not a candidate table (no column(s) {missing}; columns: "
                         f"{columns})")
    return columns, rows


def stamp_png(image: np.ndarray) -> str:
    """A data URI of the (B, H, W) cutout's Lupton composite (the last three planes as R, G, B,
    blue -> red order assumed), north up (row 0 at the bottom)."""
    from lensbench.datasets.gallery import colour_composite
    from PIL import Image

    rgb = colour_composite(image, [str(b) for b in range(image.shape[0])])
    buffer = io.BytesIO()
    Image.fromarray(np.flipud(rgb)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite_or_none(text) -> float | None:
    """A table cell as a finite float, else None (empty, non-numeric, NaN or infinite): the page
    data must be strict JSON, which has no NaN or Infinity."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rank_key(row: dict, position: int):
    """The table's rank, else best score first with unscorable rows last (never among them)."""
    try:
        return (0, int(row["rank"]), position)
    except (KeyError, TypeError, ValueError):
        score = _finite_or_none(row["score"])
        return (1, 0 if score is not None else 1, -(score or 0.0), position)


def page_data(candidates: str | os.PathLike, top: int | None = 500) -> list[dict]:
    """The best ``top`` candidates (all with None) as the page's records, stamps included; a
    cutout that cannot be read again gets an error instead of a stamp."""
    from lensbench.bench.tools.scan import BadCutout, read_locator

    _, rows = read_candidates(candidates)
    order = sorted(range(len(rows)), key=lambda k: _rank_key(rows[k], k))
    if top is not None:
        order = order[:top]
    records = []
    for position, k in enumerate(order):
        row = rows[k]
        record = {"id": row["id"], "rank": int(row.get("rank") or position + 1),
                  "score": _finite_or_none(row["score"]),
                  "spread": _finite_or_none(row.get("spread")),
                  "grade": row.get("grade") or ""}
        try:
            record["img"] = stamp_png(read_locator(row["source"]))
        except (BadCutout, OSError, ValueError) as error:
            record["error"] = f"cannot read {row['source']}: {error}"
        records.append(record)
    return records


def write_page(candidates: str | os.PathLike, out: str | os.PathLike, *, top: int | None = 500,
               per_page: int = 48, title: str | None = None) -> Path:
    """Write the grading page for the ``candidates`` table to ``out``; returns its path."""
    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")
    candidates = Path(candidates)
    records = page_data(candidates, top)
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    title = title or f"lensbench candidates: {candidates.name}"
    data = script_json({"candidates": records, "perPage": per_page, "grades": list(GRADES),
                        "keys": _KEYS, "storageKey": f"lensbench-grades:{digest}",
                        "exportName": f"{candidates.stem}-grades.csv"})
    page = _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(out, page)
    return out


# JSON escapes for text inside an HTML <script> element: "<" alone ("<!--", "</script") can end
# or reinterpret the element, ">" and "&" can complete such a sequence, and U+2028/2029 end a line
# in older JavaScript. The same set as jinja2's htmlsafe_json_dumps plus the line separators,
# written here because the page needs no template engine.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                   "\u2029": "\\u2029"}


def script_json(value) -> str:
    """``value`` as strict JSON (ValueError on NaN or infinity) that is safe to embed in an HTML
    script element whatever its strings hold."""
    text = json.dumps(value, allow_nan=False)
    return text.translate(str.maketrans(_SCRIPT_ESCAPES))


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def read_grades(path: str | os.PathLike) -> dict[str, str]:
    """{id: grade} from an exported grades CSV (columns id and grade; others ignored)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "grade"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a grades file needs columns id and grade, got "
                             f"{reader.fieldnames}")
        grades = {}
        for number, row in enumerate(reader, start=2):
            grade = (row["grade"] or "").strip()
            if grade not in (*GRADES, ""):
                raise ValueError(f"{path}: line {number}: grade {grade!r} is not one of "
                                 f"{list(GRADES)}")
            grades[row["id"]] = grade
    return grades


def merge_grades(candidates: str | os.PathLike, grades_csv: str | os.PathLike,
                 out: str | os.PathLike | None = None) -> tuple[Path, int]:
    """Add the grades in ``grades_csv`` to the candidate table as a ``grade`` column (a graded
    id overrides an older grade, an empty grade clears it), written atomically to ``out``
    (default: the table itself). Returns (path, number of candidates graded). A grade for an id
    not in the table is a ValueError: it would be silently lost."""
    candidates = Path(candidates)
    columns, rows = read_candidates(candidates)
    grades = read_grades(grades_csv)
    known = {row["id"] for row in rows}
    unknown = sorted(set(grades) - known)
    if unknown:
        raise ValueError(f"{grades_csv}: {len(unknown)} graded id(s) not in {candidates}: "
                         f"{unknown[:10]}")
    if "grade" not in columns:
        columns.append("grade")
    for row in rows:
        if row["id"] in grades:
            row["grade"] = grades[row["id"]]
        row.setdefault("grade", "")
        if row["grade"] is None:
            row["grade"] = ""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    target = Path(out) if out is not None else candidates
    _write_text_atomic(target, buffer.getvalue())
    return target, sum(1 for row in rows if row["grade"])


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #111; color: #ddd; }
header { position: sticky; top: 0; background: #222; padding: 8px 12px; z-index: 1; }
header button { margin-left: 8px; }
#help { color: #999; font-size: 12px; }
#grid { display: flex; flex-wrap: wrap; gap: 8px; padding: 12px; }
.card { width: 168px; padding: 6px; border: 3px solid #333; border-radius: 4px;
        background: #1b1b1b; }
.card.current { border-color: #fc3; }
.card img { width: 160px; height: 160px; image-rendering: pixelated; display: block; }
.card .err { width: 160px; height: 160px; color: #f66; font-size: 11px; overflow: hidden; }
.meta { font-size: 12px; margin-top: 4px; word-break: break-all; }
.grade { font-weight: bold; float: right; padding: 0 4px; border-radius: 3px; }
.g-A { background: #2a2; color: #fff; } .g-B { background: #27c; color: #fff; }
.g-C { background: #c82; color: #fff; } .g-not_lens { background: #555; color: #fff; }
</style></head>
<body>
<header><strong>__TITLE__</strong>
 <span id="pager"></span> <span id="count"></span>
 <button id="prev">&larr; page</button><button id="next">page &rarr;</button>
 <button id="export">export grades (E)</button>
 <div id="help">A / B / C grade, N or 0 not a lens, U clear; arrows or J/K move;
 [ ] or PgUp/PgDn change page; E export CSV</div></header>
<div id="grid"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const C = DATA.candidates;
let grades = {};
for (const c of C) if (c.grade) grades[c.id] = c.grade;
try { Object.assign(grades, JSON.parse(localStorage.getItem(DATA.storageKey) || "{}")); }
catch (e) { /* storage unavailable: grades live in this page only */ }
let current = 0;
const pages = Math.max(1, Math.ceil(C.length / DATA.perPage));
const pageOf = i => Math.floor(i / DATA.perPage);

function save() {
  try { localStorage.setItem(DATA.storageKey, JSON.stringify(grades)); } catch (e) {}
}
function render() {
  const grid = document.getElementById("grid");
  grid.textContent = "";
  const page = pageOf(current);
  const lo = page * DATA.perPage, hi = Math.min(C.length, lo + DATA.perPage);
  for (let i = lo; i < hi; i++) {
    const c = C[i];
    const card = document.createElement("div");
    card.className = "card" + (i === current ? " current" : "");
    card.dataset.index = i; card.dataset.id = c.id;
    if (c.img) { const img = document.createElement("img"); img.src = c.img;
                 img.alt = "candidate " + c.id; card.appendChild(img); }
    else { const e = document.createElement("div"); e.className = "err";
           e.textContent = c.error; card.appendChild(e); }
    const meta = document.createElement("div"); meta.className = "meta";
    const g = grades[c.id];
    if (g) { const s = document.createElement("span");
             s.className = "grade g-" + g; s.textContent = g === "not_lens" ? "not" : g;
             meta.appendChild(s); }
    meta.appendChild(document.createTextNode("#" + c.rank + " " + c.id));
    meta.appendChild(document.createElement("br"));
    meta.appendChild(document.createTextNode("score " +
        (c.score === null ? "n/a" : c.score.toFixed(4)) +
        (c.spread === null ? "" : " \u00b1 " + c.spread.toFixed(4))));
    card.appendChild(meta);
    card.addEventListener("click", () => { current = i; render(); });
    grid.appendChild(card);
  }
  document.getElementById("pager").textContent = "page " + (page + 1) + " / " + pages;
  document.getElementById("count").textContent =
      Object.values(grades).filter(Boolean).length + " / " + C.length + " graded";
  const el = grid.querySelector(".current");
  if (el && el.scrollIntoView) el.scrollIntoView({block: "nearest"});
}
function move(delta) {
  if (!C.length) return;
  current = Math.min(C.length - 1, Math.max(0, current + delta)); render();
}
function turn(delta) {
  const page = Math.min(pages - 1, Math.max(0, pageOf(current) + delta));
  current = Math.min(C.length - 1, page * DATA.perPage); render();
}
function grade(value) {
  if (!C.length) return;
  const id = C[current].id;
  if (value) grades[id] = value; else delete grades[id];
  save();
  if (value && current < C.length - 1) current += 1;
  render();
}
function csvField(v) {
  const s = String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function exportCsv() {
  const lines = ["id,rank,score,grade"];
  for (const c of C) if (grades[c.id])
    lines.push([c.id, c.rank, c.score === null ? "" : c.score, grades[c.id]]
               .map(csvField).join(","));
  const blob = new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = DATA.exportName;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
document.addEventListener("keydown", ev => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  if (k in DATA.keys) grade(DATA.keys[k]);
  else if (k === "u" || k === "Backspace" || k === "Delete") grade("");
  else if (k === "ArrowRight" || k === "ArrowDown" || k === "j") move(1);
  else if (k === "ArrowLeft" || k === "ArrowUp" || k === "k") move(-1);
  else if (k === "]" || k === "PageDown") turn(1);
  else if (k === "[" || k === "PageUp") turn(-1);
  else if (k === "e") exportCsv();
  else return;
  ev.preventDefault();
});
document.getElementById("prev").onclick = () => turn(-1);
document.getElementById("next").onclick = () => turn(1);
document.getElementById("export").onclick = exportCsv;
render();
</script></body></html>
"""
