"""The student's feedback page: the score, every failed part's message, the notebook as graded.

One self-contained HTML file per student and assignment (``feedback/<student>/<assignment>.html``),
safe to hand back: it shows the graded test cells as the student received them (their one-line
docstring; the hidden tests are cut out, and so is any traceback through them, since a test cell
shows only the judge's message), and it escapes everything the student wrote, so a notebook
cannot put script into a page the instructor opens.
"""

from __future__ import annotations

import html
import re

import mistune

from autograder.grading.jobs import Answer, PartResult, Status
from autograder.notebook import is_test

__all__ = ["render", "released_source", "STATUS_TEXT"]

HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: What each status says to the student.
STATUS_TEXT = {
    Status.GRADED: "graded",
    Status.TIMEOUT: "stopped: ran out of time",
    Status.CRASHED: "stopped: the notebook crashed",
    Status.MEMORY: "stopped: out of memory",
    Status.MALFORMED: "not graded: the file is not a usable notebook",
    Status.MISSING: "not graded: no submission",
}

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #555; } .score { font-size: 1.3rem; font-weight: 600; }
.reason { background: #fff6e0; border-left: 4px solid #e0a000; padding: .5rem .8rem; margin: 1rem 0; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: .4rem; vertical-align: top; text-align: left; }
.pass { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.cell { margin: 1rem 0; } .md { padding: 0 .5rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; white-space: pre-wrap; margin: .2rem 0; font-size: 13px; }
pre.out { background: #fff; border-left: 3px solid #ccc; }
pre.err { background: #fdecea; border-left: 3px solid #b3261e; }
.verdict { background: #fdecea; border-left: 4px solid #b3261e; padding: .5rem .8rem; white-space: pre-wrap; }
.ok { background: #e6f4ea; border-left: 4px solid #137333; padding: .3rem .8rem; }
.label { font-size: 12px; color: #777; }
"""


def released_source(source: str) -> str:
    """A test cell's source without its hidden region (what the student's notebook had)."""
    out, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            out.append(line)
    if hidden:  # an unterminated region: show nothing rather than risk a leak
        return ""
    return "\n".join(out).rstrip()


def _markdown(text: str) -> str:
    try:
        return mistune.create_markdown(escape=True)(text)
    except Exception:  # noqa: BLE001 - an odd markdown file still gets its text shown
        return f"<pre>{html.escape(text)}</pre>"


def _output(out) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        css = "err" if out.get("name") == "stderr" else "out"
        return f'<pre class="{css}">{html.escape(str(out.get("text", "")))}</pre>'
    if kind in ("execute_result", "display_data"):
        return f'<pre class="out">{html.escape(str(out.get("data", {}).get("text/plain", "")))}</pre>'
    if kind == "error":
        tb = "\n".join(_ANSI.sub("", str(t)) for t in out.get("traceback", []))
        text = tb or f"{out.get('ename')}: {out.get('evalue')}"
        return f'<pre class="err">{html.escape(text)}</pre>'
    return ""


def _cells(nb, parts: dict[str, PartResult]) -> str:
    chunks = []
    for index, cell in enumerate(nb.cells):
        kind = cell.get("cell_type")
        if kind == "markdown":
            chunks.append(f'<div class="cell md">{_markdown(str(cell.source))}</div>')
            continue
        if kind != "code":
            continue
        label = f'<div class="label">cell {index + 1}</div>'
        if is_test(cell):
            gid = cell.metadata.nbgrader.get("grade_id", "")
            part = parts.get(gid) or PartResult()
            src = released_source(str(cell.source))
            body = f"<pre>{html.escape(src)}</pre>" if src else ""
            if part.passed:
                verdict = f'<div class="ok">✓ passed ({_pts(part.score)} / {_pts(part.max_score)} points)</div>'
            else:
                msg = part.message or "This check did not pass."
                verdict = (f'<div class="verdict"><strong>✗ {_pts(part.score)} / '
                           f'{_pts(part.max_score)} points.</strong> {html.escape(msg)}</div>')
            chunks.append(f'<div class="cell" id="{html.escape(gid)}">{label}{body}{verdict}</div>')
        else:
            outs = "".join(_output(o) for o in cell.get("outputs", []))
            chunks.append(f'<div class="cell">{label}<pre>{html.escape(str(cell.source))}</pre>{outs}</div>')
    return "\n".join(chunks)


def _pts(value) -> str:
    value = float(value or 0)
    return f"{value:g}"


def _speed(entry: dict | None) -> str:
    """The ungraded speed line (``grade --speed``)."""
    if not entry:
        return ""
    if entry.get("ratio") is None:
        text = html.escape(entry.get("message") or "not timed")
        return f'<p class="meta">Speed (ungraded): {text}.</p>'
    shape = " × ".join(str(n) for n in entry.get("shape", []))
    return (f'<p class="meta">Speed (ungraded): your <code>BatchNorm1d</code> took {entry["ratio"]:.2f}× the time of '
            f"<code>nn.BatchNorm1d</code> for a forward and backward pass on a {html.escape(shape)} batch "
            "(lower is faster). The last chapter of the book shows how to make it faster.</p>")


def render(answer: Answer, nb=None) -> str:
    """The feedback page for one graded (or ungraded: `nb` None) submission."""
    student, assignment = html.escape(answer.student_id), html.escape(answer.assignment)
    status = answer.status
    parts = answer.parts
    rows = []
    for gid, part in parts.items():
        mark = '<span class="pass">✓</span>' if part.passed else '<span class="fail">✗</span>'
        ungraded = status in (Status.MALFORMED, Status.MISSING)
        msg = "" if part.passed else html.escape(part.message or ("not graded" if ungraded else "did not pass"))
        name = html.escape(part.title or gid)
        link = f'<a href="#{html.escape(gid)}">{name}</a>' if nb is not None else name
        rows.append(f"<tr><td>{mark}</td><td>{link}<br><code>{html.escape(gid)}</code></td>"
                    f"<td>{_pts(part.score)} / {_pts(part.max_score)}</td>"
                    f"<td style='white-space: pre-wrap'>{msg}</td></tr>")
    reason = answer.reason
    reason_html = f'<div class="reason">{html.escape(reason)}</div>' if reason else ""
    table = ("<table><tr><th></th><th>What is checked</th><th>Points</th><th>Feedback</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>No graded parts.</p>"
    notebook = (f"<h2>Your notebook, as graded</h2>{_cells(nb, parts)}" if nb is not None else "")
    table += _speed(answer.speed)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback: {assignment} ({student})</title>
<style>{CSS}</style></head><body>
<h1>Feedback on {assignment}</h1>
<p class="meta">Student: <strong>{student}</strong> · Status: {html.escape(STATUS_TEXT.get(status, status))}</p>
<p class="score">Score: {_pts(answer.score)} / {_pts(answer.max_score)}</p>
{reason_html}
<h2>Parts</h2>
{table}
{notebook}
</body></html>
"""
