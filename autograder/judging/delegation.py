r"""Delegation: why a check's functions count as handing their work to a library.

Two kinds of evidence, both judged by the one policy (:func:`autograder.inside.policy.rule`):

- the student's source (:class:`autograder.judging.static.Analysis`): what each of the
  check's functions (and the helpers they call) uses; for the class whose backward the check
  grades (``Scenario.backward_of``), autograd inside it;
- what the sandbox saw at run time: the record's ``foreign`` facts (forbidden functions that
  ran during the student's calls, or inside the student's backward) and ``globals`` facts (the
  student's global names bound to forbidden things).

The facts come from the student's process, so each is judged again here: a name the policy
allows is no evidence, whatever the record says.

TRUSTED SIDE.
"""

from __future__ import annotations

from collections.abc import Iterable

from autograder.inside.policy import rule
from autograder.inside.scenarios import Record, Scenario
from autograder.judging.static import Analysis

__all__ = ["delegation"]

#: At most this many reasons, and this many names per reason, are quoted.
_REASONS = 4
_NAMES = 3


def _names(names: Iterable[str]) -> str:
    """``a, b, c`` (and ``and 2 more`` beyond three)."""
    names = list(names)
    shown = ", ".join(names[:_NAMES])
    return shown if len(names) <= _NAMES else f"{shown} and {len(names) - _NAMES} more"


def _by_reason(found: dict[str, str]) -> dict[str, list[str]]:
    """``{why: [what, ...]}`` in sorted order of ``what``."""
    grouped: dict[str, list[str]] = {}
    for what in sorted(found):
        grouped.setdefault(found[what], []).append(what)
    return grouped


def _in_source(sc: Scenario, source: str) -> list[str]:
    analysis = Analysis(source, sc.family)
    reasons = []
    for target in sc.targets:
        for why, used in _by_reason(analysis.uses.get(target, {})).items():
            reasons.append(f"`{target}` uses {_names(used)}: {why}.")
        if target == sc.backward_of:
            for why, used in _by_reason(analysis.backward_uses.get(target, {})).items():
                reasons.append(f"`{target}` calls {_names(used)}: {why}.")
    return reasons


def _at_run_time(sc: Scenario, record: Record) -> list[str]:
    ran: dict[str, str] = {}
    ran_in_backward: dict[str, str] = {}
    for entry in record.facts.get("foreign", []) or []:
        name = str(entry)
        why = rule(name, sc.family)
        if why:
            ran[name] = why
        elif sc.backward_of:
            why = rule(name, sc.family, in_backward=True)
            if why:
                ran_in_backward[name] = why
    used: dict[str, str] = {}
    globals_ = record.facts.get("globals", {}) or {}
    for name, where in (globals_.items() if isinstance(globals_, dict) else ()):
        why = rule(str(where), sc.family)
        if why:
            used[f"`{name}` ({where})"] = why
    reasons = [f"{_names(names)} ran during this check: {why}." for why, names in _by_reason(ran).items()]
    reasons += [f"{_names(names)} ran inside your {sc.backward_of}.backward: {why}."
                for why, names in _by_reason(ran_in_backward).items()]
    reasons += [f"your code uses {_names(names)}: {why}." for why, names in _by_reason(used).items()]
    return reasons


def delegation(sc: Scenario, record: Record, source: str = "") -> str:
    """Why this check's functions count as delegating (empty string if they do not).

    Args:
        sc: the check's scenario.
        record: what the probe recorded for the check.
        source: the student's cells (:func:`autograder.notebook.student_source`); empty when
            unknown (the run-time facts are judged alone). Default: ""
    """
    reasons = (_in_source(sc, source) if source else []) + _at_run_time(sc, record)
    unique = list(dict.fromkeys(reasons))
    return " ".join(unique[:_REASONS])
