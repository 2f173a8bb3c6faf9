"""Answer leaks: does anything students are given contain most of a graded function's answer?

An *answer* is one implementation of a graded name (:data:`autograder.course.spec.INTERFACE`):
the instructor's solution in ``solutions/<assignment>/<assignment>.ipynb``, and ``bnlib``'s
implementation of the same computation (:data:`LIBRARY`, helpers included: ``forward_train``
is nothing without ``_forward``). A *document* is a piece of code students can read: a page's
code blocks and outputs, a published source or notebook download, a cell of a released
notebook.

Similarity is measured as MOSS and copydetect measure it, name-agnostic: each piece of code
is tokenized (Pygments' Python lexer) and normalized by copydetect (every identifier becomes
``V``, every function name ``F``, every class name ``O``, every string ``S``; comments and
whitespace vanish), so renaming variables, dropping comments or reformatting changes
nothing. Each run of :data:`K` characters of normalized code is fingerprinted; an answer's
*coverage* by some documents is the fraction of its normalized code that lies in runs whose
fingerprints occur in them. The code a student is handed anyway (the stubs of the released
notebooks: signatures, docstrings, ``return`` lines) is boilerplate, as in MOSS, and never
counts.

:data:`K` = 20 characters is about one and a half statements (``dbeta = dy.sum(axis=0)`` is
``V=V.V(V=0)``, 10): a single shared line never matches, two consecutive shared lines may. A
document *leaks* an answer when it covers at least :data:`THRESHOLD` of it; so does the
union of all documents together (a combination of code blocks that is an answer). A copy
with renamed variables and no comments covers all of its answer; the student edition of the
book, which calls ``bnlib`` and checks numbers but prints none of it, covers little of any
(``tests/test_leaks.py`` measures both).

Run ``python tests/leaks.py <site or notebook> ...`` for the coverage of every answer.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import re
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
from bs4 import BeautifulSoup
from copydetect import CodeFingerprint
from copydetect.utils import get_copied_slices, get_token_coverage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # as a script: the repository's packages
    sys.path.insert(0, str(REPO))

from autograder.course.spec import COURSE  # noqa: E402

#: Characters of normalized code per fingerprint.
K = 20
#: The coverage from which a document (or all of them together) leaks an answer.
THRESHOLD = 0.5

#: bnlib's implementation of each graded name, as ``module:qualified.name``; several tuples
#: are several implementations, each judged on its own.
LIBRARY: dict[str, tuple[tuple[str, ...], ...]] = {
    "bn_forward_train": (("bnlib.numpy:forward_train", "bnlib.numpy:_forward", "bnlib.numpy:batch_mean",
                          "bnlib.numpy:batch_var", "bnlib.numpy:scale_shift"),),
    "bn_forward_eval": (("bnlib.numpy:forward_eval", "bnlib.numpy:_forward", "bnlib.numpy:scale_shift"),),
    "update_running_stats": (("bnlib.numpy:update_running_stats", "bnlib.numpy:unbiased_var"),),
    "bn_backward_staged": (("bnlib.numpy:backward_staged",),),
    "bn_backward_compact": (("bnlib.numpy:backward_compact",),),
    "BatchNormFunction": (("bnlib.torch:BatchNormFunction",),
                          ("bnlib.fused_torch:forward_train", "bnlib.fused_torch:backward_train",
                           "bnlib.fused_torch:FusedBatchNormFunction")),
    "BatchNorm1d": (("bnlib.torch:BatchNorm1d",),
                    ("bnlib.numpy:BatchNorm1d.forward", "bnlib.numpy:update_running_stats", "bnlib.numpy:to_2d",
                     "bnlib.numpy:from_2d")),
    "batchnorm2d_forward_train": (("bnlib.numpy:BatchNorm1d.forward", "bnlib.numpy:to_2d", "bnlib.numpy:from_2d",
                                   "bnlib.numpy:forward_train", "bnlib.numpy:_forward"),),
    "batchnorm2d_backward": (("bnlib.numpy:BatchNorm1d.backward", "bnlib.numpy:backward_compact"),),
    "layernorm_forward": (("bnlib.numpy:LayerNorm.forward", "bnlib.numpy:normalize_rows"),),
    "layernorm_backward": (("bnlib.numpy:LayerNorm.backward", "bnlib.numpy:normalize_rows_backward"),),
    "groupnorm_forward": (("bnlib.numpy:GroupNorm.forward", "bnlib.numpy:normalize_rows"),),
    "groupnorm_backward": (("bnlib.numpy:GroupNorm.backward", "bnlib.numpy:normalize_rows_backward"),),
}

_SOLUTION = re.compile(r"^[ \t]*### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*\n", re.S | re.M)


@dataclass(frozen=True)
class Answer:
    """One implementation of a graded name."""

    assignment: str
    name: str
    origin: str  #: e.g. "solutions/bn-torch/bn-torch.ipynb" or "bnlib.numpy:backward_staged"
    code: str


@dataclass(frozen=True)
class Document:
    """A piece of code students can read."""

    where: str  #: the file, and where in it
    code: str


@dataclass(frozen=True)
class Leak:
    answer: Answer
    where: str  #: a document, or "all documents together"
    coverage: float

    def __str__(self) -> str:
        return (f"{self.where} holds {self.coverage:.0%} of {self.answer.name} ({self.answer.assignment}) "
                f"as {self.answer.origin} writes it")


# --------------------------------------------------------------------------------------------
# The answers
# --------------------------------------------------------------------------------------------


def bodies(code: str) -> str:
    """The statements that do the work in ``code``: every function's body without its docstring.

    A graded function's signature is given to students (the stub) and type-annotated
    signatures all look alike once normalized, so they are not part of an answer; nor are
    docstrings. A class keeps its methods' bodies. Code that does not parse comes back whole.
    """
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return code
    source = textwrap.dedent(code)
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]
            parts += [textwrap.dedent(ast.get_source_segment(source, stmt, padded=True)) for stmt in body
                      if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n".join(parts) if parts else code


def _definitions(source: str, names: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(name, source)`` of each top-level function or class of ``source`` called one of ``names``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            yield node.name, ast.get_source_segment(source, node)


def solution_answers(solutions: Path = REPO / "solutions") -> list[Answer]:
    """The instructor's solution of every graded name, from each assignment's source notebook."""
    answers = []
    for a in COURSE:
        path = solutions / a.name / f"{a.name}.ipynb"
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                for name, code in _definitions(cell.source, a.names):
                    answers.append(Answer(a.name, name, str(path.relative_to(REPO)), bodies(code)))
    return answers


def _source(spec: str) -> str:
    module, qualname = spec.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return inspect.getsource(getattr(obj, "fn", obj))  # a Triton kernel wraps its Python function in .fn


def library_answers() -> list[Answer]:
    """bnlib's implementation of every graded name (:data:`LIBRARY`)."""
    answers = []
    for a in COURSE:
        for name in a.names:
            for specs in LIBRARY[name]:
                answers.append(Answer(a.name, name, " + ".join(specs),
                                      "\n\n".join(bodies(_source(spec)) for spec in specs)))
    return answers


def starter_code(solutions: Path = REPO / "solutions") -> str:
    """What the released notebooks give students: every solution cell with its solution cut out."""
    stubs = []
    for a in COURSE:
        for cell in nbformat.read(solutions / a.name / f"{a.name}.ipynb", as_version=4).cells:
            if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
                stubs.append(_SOLUTION.sub("", cell.source))
    return "\n\n".join(stubs)


# --------------------------------------------------------------------------------------------
# What students can read
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)


def fenced_code(markdown: str) -> list[str]:
    """The contents of the fenced blocks of ``markdown``, the options of a directive left out."""
    blocks = []
    for match in _FENCE.finditer(markdown):
        body = match["body"]
        if body.startswith("---\n"):  # a MyST cell's YAML options
            body = body.split("\n---\n", 1)[-1]
        lines = [line for line in body.splitlines() if not re.match(r"^:[\w-]+:", line)]
        blocks.append("\n".join(lines))
        blocks += fenced_code(body)  # a fence inside a directive (an {only} block, say)
    return blocks


def html_code(html: str) -> list[str]:
    """The text of every ``<pre>`` of a page: code blocks, listings and printed outputs."""
    return [pre.get_text() for pre in BeautifulSoup(html, "html.parser").find_all("pre")]


def notebook_code(nb: nbformat.NotebookNode) -> list[str]:
    """Every piece of code a notebook holds: code cells, fenced code in Markdown, and outputs."""
    code = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            code.append(cell.source)
            for out in cell.get("outputs", []):
                if "text" in out:
                    code.append(out["text"])
                data = out.get("data", {})
                code += [data["text/plain"]] if "text/plain" in data else []
                code += fenced_code(data["text/markdown"]) if "text/markdown" in data else []
                code += html_code(data["text/html"]) if "text/html" in data else []
        else:
            code += fenced_code(cell.source)
    return code


def notebook_documents(path: Path, name: str | None = None) -> list[Document]:
    """One document per cell of a notebook (its source and its outputs)."""
    nb = nbformat.read(path, as_version=4)
    name = name or str(path)
    return [Document(f"{name}, cell {k}", "\n\n".join(notebook_code(nbformat.v4.new_notebook(cells=[cell]))))
            for k, cell in enumerate(nb.cells)]


#: Folders of a built site that hold no page content: the theme's and MathJax's files, images.
_ASSETS = ("_static", "_images", "_sphinx_design_static")


def site_documents(site: Path) -> list[Document]:
    """One document per file the site publishes that can hold code: its pages (every ``<pre>``),
    the page sources and notebook downloads (``_sources/``), and any other notebook or text file."""
    docs = []
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        rel = path.relative_to(site)
        if rel.parts[0] in _ASSETS:
            continue
        if path.suffix == ".html":
            blocks = html_code(path.read_text(errors="replace"))
        elif path.suffix == ".ipynb":
            blocks = notebook_code(nbformat.read(path, as_version=4))
        elif path.suffix in (".md", ".txt", ".rst"):
            blocks = fenced_code(path.read_text(errors="replace"))
        elif path.suffix == ".py":
            blocks = [path.read_text(errors="replace")]
        else:
            continue
        if blocks:
            docs.append(Document(str(rel), "\n\n".join(blocks)))
    return docs


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


def fingerprint(code: str, boilerplate: frozenset[int] = frozenset()) -> CodeFingerprint:
    """copydetect's fingerprint of ``code`` (Python), every :data:`K`-gram kept, except those of
    ``boilerplate`` (fingerprints of code students are given), which no longer count at all."""
    prints = CodeFingerprint("code.py", K, 1, fp=io.StringIO(code))
    if boilerplate:
        prints.hashes -= boilerplate
        prints.hash_idx = {h: i for h, i in prints.hash_idx.items() if h not in boilerplate}
        prints.token_coverage = get_token_coverage(prints.hash_idx, K, len(prints.filtered_code))
    return prints


def coverage(answer: CodeFingerprint, hashes: set[int]) -> float:
    """The fraction of ``answer``'s normalized code inside runs whose fingerprints are in ``hashes``."""
    found = [i for h in answer.hashes & hashes for i in answer.hash_idx[h]]
    if not found or not answer.token_coverage:
        return 0.0
    starts, ends = get_copied_slices(np.array(found), K)
    return float(np.sum(ends - starts)) / answer.token_coverage


@dataclass
class Detector:
    """Finds the answers that documents contain, alone or together."""

    answers: list[Answer]
    boilerplate: str = ""
    threshold: float = THRESHOLD
    _prints: list[CodeFingerprint] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        skip = frozenset(fingerprint(self.boilerplate).hashes) if self.boilerplate else frozenset()
        self._prints = [fingerprint(a.code, skip) for a in self.answers]

    def coverages(self, documents: list[Document]) -> list[tuple[Answer, str, float]]:
        """For each answer: the document that covers most of it, and how much; and all together."""
        hashes = {d.where: fingerprint(d.code).hashes for d in documents}
        everything = set().union(*hashes.values()) if hashes else set()
        found = []
        for answer, prints in zip(self.answers, self._prints, strict=True):
            best = max(((coverage(prints, h), where) for where, h in hashes.items()), default=(0.0, "nothing"))
            found.append((answer, best[1], best[0]))
            found.append((answer, "all documents together", coverage(prints, everything)))
        return found

    def leaks(self, documents: list[Document]) -> list[Leak]:
        return [Leak(a, where, c) for a, where, c in self.coverages(documents) if c >= self.threshold]


def course_detector() -> Detector:
    """Every answer of the course (solutions and bnlib), the released stubs as boilerplate."""
    return Detector(solution_answers() + library_answers(), starter_code())


def main(paths: list[str]) -> int:
    """Print each answer's largest coverage by the given sites (folders) and notebooks; 1 if any leaks."""
    docs = []
    for p in map(Path, paths):
        docs += site_documents(p) if p.is_dir() else notebook_documents(p)
    detector = course_detector()
    for answer, where, c in detector.coverages(docs):
        flag = "LEAK" if c >= detector.threshold else "    "
        print(f"{flag} {c:4.0%}  {answer.name:22s} {answer.origin[:60]:60s} {where}")
    return 1 if detector.leaks(docs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
