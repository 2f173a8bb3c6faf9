r"""The trusted side's verdicts: a check's record compared with bnlib's reference, mistakes named.

TRUSTED SIDE ONLY (it imports bnlib, which the sandbox hides). Stable API:

``verdict(check_id, record, seed, student_source="", options=None) -> Verdict``
    judge one check (:mod:`.verdict`, which says how).
``Verdict(passed, message, mistake, delegated)``
    the outcome: ``message`` is the feedback, plain text; empty on success.
``delegation(scenario, record, source="") -> str``
    why a check's functions count as delegating, or "" (:mod:`.delegation`).

The steps live in one module each: :mod:`.compare` (records against records),
:mod:`.replay` (the reference and the wrong variants, run on the same seed and kept),
:mod:`.naming` (which catalogued mistake a failure looks like), :mod:`.static` (the source's
uses, by the policy of :mod:`autograder.inside.policy`), :mod:`.delegation` and :mod:`.verdict`.
"""

from autograder.judging.delegation import delegation
from autograder.judging.verdict import Verdict, verdict

__all__ = ["Verdict", "verdict", "delegation"]
