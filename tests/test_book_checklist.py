"""Every fact of the course's seed text has its place in the book, in the book's own words.

``SEED_FACTS`` is the checklist: one entry per fact of the seed text (the user's one-page
summary of batch normalization), each pointing at the page and the section (its HTML
anchor) that covers it, with key terms that section must contain. The test reads the
built book (the session's one from-scratch build) so that it checks what readers see.

The seed text itself is not in the repository. To check that no sentence of it was copied,
``tests/data/seed_shingles.txt`` holds a hash of every run of six consecutive words of its
prose (equations and code left out); no run of six words of the book may hash to one of
them. Regenerate it with ``python tests/test_book_checklist.py SEED.md``.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SHINGLES = Path(__file__).with_name("data") / "seed_shingles.txt"
SHINGLE_WORDS = 6


class Fact(NamedTuple):
    """One fact of the seed text and where the book covers it."""

    fact: str  #: the fact, paraphrased
    page: str  #: the chapter, e.g. "book/idea"
    anchor: str  #: the id of the section (an explicit label or the heading's id)
    terms: tuple[str, ...]  #: words the section must contain (case-insensitive; TeX as written)


SEED_FACTS: list[Fact] = [
    # -- what BN is and where it goes
    Fact("BN is an operation added just before or after the activation function of each hidden layer",
         "book/idea", "where-bn-sits", ("before the activation", "after the activation", "hidden layer")),
    Fact("it zero-centres and normalizes each input",
         "book/idea", "what-bn-does", ("centred on zero", "normalizes", "every input")),
    Fact("then scales and shifts the result with two new parameter vectors per layer, one to scale, one to shift",
         "book/idea", "what-bn-does",
         ("two vectors of new parameters per batch-norm layer", r"\gamma", r"\beta", "scale")),
    Fact("so the model learns the optimal scale and mean of each of the layer's inputs",
         "book/scale-shift", "chapter-scale-shift", ("learns which mean", "which scale", "each input")),
    # -- mini-batch statistics in training
    Fact("during training BN deliberately computes mean and variance from the mini-batch only",
         "book/mini-batches", "chapter-mini-batches", ("deliberate", "mini-batch", "training mode")),
    Fact("this is efficient: statistics over the whole data set at every update would be too slow",
         "book/mini-batches", "why-not-the-whole-dataset", ("every step", "whole", "times slower")),
    Fact("mini-batch statistics add noise that acts as a regularizer and helps generalization, like dropout",
         "book/mini-batches", "noise-regularizes", ("noise", "regulariz", "dropout", "generaliz")),
    # -- inference
    Fact("at inference BN does not use mini-batch statistics",
         "book/inference", "chapter-inference", ("does not compute statistics", "inference")),
    Fact("it uses running averages of the mean and variance gathered during training",
         "book/inference", "running-averages", ("running", "average", "momentum", "training batch")),
    Fact("the running averages approximate the statistics of the whole data",
         "book/inference", "chapter-inference", ("approximate the statistics of the whole training data",)),
    Fact("this makes predictions stable and independent of the batch size",
         "book/inference", "batch-mates", ("evaluation mode", "batch-mates", "same number every")),
    # -- BN as the first layer
    Fact("a BN first layer often makes standardizing the training set (StandardScaler) unnecessary",
         "book/standardization", "bn-instead-of-standardscaler", ("StandardScaler", "first layer", "raw pixels")),
    Fact("only approximately: it looks at one batch at a time",
         "book/standardization", "standardization-caveats", ("one batch at a time", "approximate")),
    Fact("and it can also rescale and shift each input feature",
         "book/standardization", "standardization-caveats", ("rescale and shift", r"\gamma", r"\beta")),
    # -- the four equations
    Fact("the mini-batch mean equation", "book/batch-mean", "chapter-batch-mean",
         (r"\mu_B = \frac{1}{m} \sum_{i=1}^{m} x^{(i)}",)),  # the book writes the batch size m
    Fact("the mini-batch variance equation (divides by m_B)", "book/batch-variance", "chapter-batch-variance",
         (r"\sigma_B^2 = \frac{1}{m} \sum_{i=1}^{m} \big(x^{(i)} - \mu_B\big)^2",)),
    Fact("the normalization equation, epsilon inside the square root", "book/normalize", "chapter-normalize",
         (r"\hat{x}^{(i)} = \frac{x^{(i)} - \mu_B}{\sqrt{\sigma_B^2 + \varepsilon}}",)),
    Fact("the scale-and-shift equation", "book/scale-shift", "chapter-scale-shift",
         (r"y^{(i)} = \gamma \otimes \hat{x}^{(i)} + \beta",)),  # the book's y is the source's z
    # -- the symbols
    Fact("mu_B: the vector of means over the mini-batch, one mean per input",
         "book/idea", "notation", (r"\mu_B", "one mean per input")),
    Fact("m_B: the number of instances in the mini-batch",
         "book/idea", "notation", ("m_B", "number of examples (instances) in the mini-batch")),
    Fact("x^(i): the input vector of instance i",
         "book/idea", "notation", ("x^{(i)}", "input vector of example")),
    Fact("sigma_B: the vector of standard deviations over the mini-batch",
         "book/idea", "notation", (r"\sigma_B", "standard deviation: one per input")),
    Fact("x_hat^(i): the normalized input vector of instance i",
         "book/idea", "notation", (r"\hat{x}^{(i)}", "normalized input vector")),
    Fact("epsilon: a small constant for numerical stability, e.g. 1e-5",
         "book/normalize", "chapter-normalize", (r"\varepsilon", "numerical stability", "10^{-5}")),
    Fact("what epsilon protects against (shown): zero and tiny variances",
         "book/normalize", "what-eps-protects-against", ("zero variance", "NaN", "tiny variance")),
    Fact("gamma: the vector of scale parameters, one per input",
         "book/scale-shift", "chapter-scale-shift", (r"\gamma", "vector of scale parameters", "one entry per input")),
    Fact("beta: the vector of shift parameters, one per input",
         "book/scale-shift", "chapter-scale-shift", (r"\beta", "shift parameters")),
    Fact("the circled times is element-wise multiplication",
         "book/scale-shift", "chapter-scale-shift", (r"\otimes", "element-wise multiplication")),
    Fact("z^(i): the output of the BN operation",
         "book/idea", "notation", ("z^{(i)}", "output of batch normalization")),  # named beside the book's y
    # -- z-score
    Fact("BN's normalization step is basically z-score normalization",
         "book/standardization", "z-score", ("z-score", "same operation")),
    Fact("BN extends it with learnable parameters gamma and beta",
         "book/standardization", "z-score", ("learnable", r"\gamma", r"\beta")),
    Fact("and by working on mini-batches, which suits neural networks",
         "book/standardization", "z-score", ("mini-batches", "neural networks")),
    # -- the seed's model
    Fact("the example model: BatchNorm1d(784) for input normalization, then Linear/ReLU/BatchNorm1d blocks",
         "book/idea", "digits-network", ("nn.BatchNorm1d(784)", "nn.Linear(784, 300), nn.ReLU(), nn.BatchNorm1d(300)",
                                     "nn.Linear(300, 100), nn.ReLU(), nn.BatchNorm1d(100)", "nn.Linear(100, 10)")),
    # -- train() and eval()
    Fact("BN behaves differently during training and during evaluation",
         "book/train-eval", "chapter-train-eval", ("training mode", "evaluation mode", "two behaviours")),
    Fact("switch to training mode with model.train() during training",
         "book/train-eval", "chapter-train-eval", ("model.train()", "before training")),
    Fact("switch to evaluation mode with model.eval() during evaluation",
         "book/train-eval", "chapter-train-eval", ("model.eval()", "before evaluating")),
    Fact("forgetting to switch is one of the most common mistakes",
         "book/train-eval", "chapter-train-eval", ("most common mistakes",)),
]


def _section_text(html_path: Path, anchor: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html_path.read_text(), "html.parser")
    element = soup.find(id=anchor)
    assert element is not None, f"{html_path.name} has no anchor #{anchor}"
    section = element if element.name == "section" else element.find_parent("section")
    assert section is not None, f"#{anchor} in {html_path.name} is not inside a section"
    return section.get_text("")


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.slow
@pytest.mark.parametrize("fact", SEED_FACTS, ids=[f.fact[:60] for f in SEED_FACTS])
def test_seed_fact_has_its_section_in_the_book(book_build, fact: Fact):
    page = book_build.html / f"{fact.page}.html"
    assert page.is_file(), f"{fact.page} was not built"
    text = _normalize(_section_text(page, fact.anchor))
    missing = [t for t in fact.terms if _normalize(t) not in text]
    assert not missing, f"section #{fact.anchor} of {fact.page} does not mention {missing} ({fact.fact})"


def test_checklist_points_only_at_chapters_of_the_book():
    toc = (REPO / "_toc.yml").read_text()
    for fact in SEED_FACTS:
        assert f"file: {fact.page}" in toc or f"root: {fact.page}" in toc, fact
        assert (REPO / f"{fact.page}.md").is_file(), fact


# --------------------------------------------------------------------------------------------
# The sections the graded notebooks' feedback sends students to
# --------------------------------------------------------------------------------------------


def _heading_text(text: str) -> str:
    """A heading as a student would type it: math and markup dropped, ε spelled eps."""
    text = text.replace("\\(\\varepsilon\\)", "eps").replace("ε", "eps").replace("#", "").replace("`", "")
    text = text.replace("\u2019", "'")
    return " ".join(text.lower().split()).rstrip(".:")


def _headings(page: Path) -> list[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.read_text(), "html.parser")
    return [_heading_text(h.get_text("")) for h in soup.select("article h1, article h2, article h3, article h4")]


def feedback_readings() -> list[tuple[str, str]]:
    """Every (chapter stem, section title) that feedback or notebooks cite."""
    from autograder.course.mistakes import MISTAKES
    from autograder.course.spec import READING

    return sorted({(m.read.chapter, m.read.section) for m in MISTAKES} | set(READING.values()))


@pytest.mark.slow
def test_every_section_the_feedback_names_exists_in_the_book(book_build):
    missing = []
    for stem, section in feedback_readings():
        page = book_build.html / "book" / f"{stem}.html"
        if not page.is_file() or _heading_text(section) not in _headings(page):
            missing.append(f"book/{stem}: {section!r}")
    assert not missing, "feedback points to sections the book does not have:\n" + "\n".join(missing)


@pytest.mark.slow
def test_chapter_titles_the_feedback_uses_match_the_book(book_build):
    from autograder.course.mistakes import CHAPTERS

    for stem, title in CHAPTERS.items():
        page = book_build.html / "book" / f"{stem}.html"
        assert page.is_file(), f"feedback names book/{stem}, which the book does not have"
        assert _headings(page)[0].startswith(_heading_text(title)), (stem, title, _headings(page)[0])


# --------------------------------------------------------------------------------------------
# No copied sentences
# --------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words and numbers, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", text.lower())


def shingle_hashes(text: str, n: int = SHINGLE_WORDS) -> set[str]:
    """A short hash of every run of ``n`` consecutive words of ``text``."""
    ws = words(text)
    return {
        hashlib.sha256(" ".join(ws[i : i + n]).encode()).hexdigest()[:16] for i in range(len(ws) - n + 1)
    }


def seed_prose(seed: str) -> str:
    """The seed's sentences: its code example and its equations removed."""
    before_code, _, rest = seed.partition("\nExample\n")
    _, _, after_code = rest.partition("\nWarning\n")
    prose = before_code + "\n" + after_code
    prose = re.sub(r"\\\[.*?\\\]", " ", prose, flags=re.S)
    return re.sub(r"\\\(.*?\\\)", " ", prose)


def test_book_does_not_copy_the_seeds_sentences():
    seed = set(SHINGLES.read_text().split())
    assert len(seed) > 300, "the seed's shingle file looks truncated"
    copied = []
    for path in sorted((REPO / "book").glob("*.md")):
        text = path.read_text()
        ws = words(text)
        for i in range(len(ws) - SHINGLE_WORDS + 1):
            run = " ".join(ws[i : i + SHINGLE_WORDS])
            if hashlib.sha256(run.encode()).hexdigest()[:16] in seed:
                copied.append(f"{path.name}: '{run}'")
    assert not copied, "six-word runs copied from the seed text:\n" + "\n".join(copied)


if __name__ == "__main__":  # regenerate tests/data/seed_shingles.txt from the seed text
    source = Path(sys.argv[1]).read_text()
    SHINGLES.parent.mkdir(exist_ok=True)
    SHINGLES.write_text("\n".join(sorted(shingle_hashes(seed_prose(source)))) + "\n")
    print(f"wrote {SHINGLES}")
