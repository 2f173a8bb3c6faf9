"""nbgrader preprocessors the course puts in place of two of nbgrader 0.9.6's own.

``nbgrader_config.py`` lists them in ``Autograde.sanitize_preprocessors``; they run before the
notebook is executed, in the trusted process.

:class:`DeduplicateCells` (instead of ``DeduplicateIds``)
    A student who copies a graded cell gets two cells with one ``grade_id``. nbgrader keeps the
    last and empties the others' metadata to ``{}``, and an empty ``nbgrader`` entry then makes
    ``OverwriteCells.add_missing_cells`` fail with ``KeyError: 'grade_id'``, so the whole
    submission goes ungraded. Here the extra copies lose their ``nbgrader`` entry altogether:
    they become ordinary cells, and the kept copy is graded as usual.

:class:`RestoreCells` (instead of ``OverwriteCells``)
    Does what ``OverwriteCells`` does (restores the source of locked cells, the points and the
    cell types from the gradebook) and puts back graded cells a student deleted
    (``add_missing_cells``). nbgrader 0.9.6 reinserts a deleted cell after its predecessor
    in the source notebook only when that predecessor is a graded or solution cell, and fails
    with a ``KeyError`` when it is a read-only cell (as the visible tests before each hidden
    test are here). This version inserts it after the nearest earlier cell still present,
    whatever its kind. A cell whose ``grade_id`` the gradebook does not know (edited metadata)
    loses its ``nbgrader`` entry instead of breaking the metadata check; the real cell is then
    restored as missing.
"""

from __future__ import annotations

from typing import Any

from nbgrader import utils
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import DeduplicateIds, OverwriteCells

__all__ = ["DeduplicateCells", "RestoreCells"]


class DeduplicateCells(DeduplicateIds):
    """Keep the last cell of each ``grade_id``; the earlier copies become ordinary cells."""

    def preprocess_cell(self, cell: Any, resources: Any, cell_index: int):
        if not (utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell)):
            return cell, resources
        grade_id = cell.metadata.nbgrader.get("grade_id")
        if grade_id in self.grade_ids:
            self.log.warning("Cell with id '%s' exists multiple times: grading the last one", grade_id)
            del cell.metadata["nbgrader"]
        else:
            self.grade_ids.add(grade_id)
        return cell, resources


class RestoreCells(OverwriteCells):
    """``OverwriteCells`` that also restores deleted graded cells, wherever they were."""

    def preprocess_cell(self, cell: Any, resources: Any, cell_index: int):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            try:
                self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                self.log.warning("Cell '%s' is not in the gradebook: grading it as an ordinary cell", grade_id)
                del cell.metadata["nbgrader"]
                return cell, resources
        return super().preprocess_cell(cell, resources, cell_index)

    def add_missing_grade_cells(self, nb: Any, resources: Any):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}
        for k, source_cell in enumerate(source_cells):
            present = _positions(nb)
            if source_cell.name not in grade_cells or source_cell.name in present:
                continue
            self.log.warning("Graded cell %s was deleted: adding it back", source_cell.name)
            position = 0
            for earlier in reversed(source_cells[:k]):
                if earlier.name in present:
                    position = present[earlier.name] + 1
                    break
            cell = self.missing_cell_transform(
                source_cell,
                grade_cells[source_cell.name].max_score,
                is_solution=source_cell.name in solution_ids,
            )
            cell["id"] = _cell_id(nb, source_cell.name)
            nb.cells.insert(position, cell)
        return nb, resources

    def add_missing_task_cells(self, nb: Any, resources: Any):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        names = [cell.name for cell in source_cells]
        present = _positions(nb)
        for task_cell in source_nb.task_cells:
            if task_cell.name not in present:
                source_cell = source_cells[names.index(task_cell.name)]
                cell = self.missing_cell_transform(source_cell, task_cell.max_score, is_task=True)
                cell["id"] = _cell_id(nb, source_cell.name)
                nb.cells.append(cell)
        return nb, resources


def _positions(nb: Any) -> dict[str, int]:
    """``grade_id -> index`` of the cells that have one."""
    out = {}
    for i, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            out[grade_id] = i
    return out


def _cell_id(nb: Any, grade_id: str) -> str:
    """A fresh nbformat cell id for a restored cell."""
    taken = {cell.get("id") for cell in nb.cells}
    base = "restored-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in grade_id)[:50]
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name
