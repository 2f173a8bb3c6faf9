"""Limits: one definition of every limit and grace, and the executor gets each value it applies from its job."""

from __future__ import annotations

import dataclasses

from autograder.cli import build_parser
from autograder.grading.coordinator import GradeOptions
from autograder.inside.protocol import JobMessage
from autograder.sandbox import Limits, Sandbox


def test_the_documented_defaults():
    limits = Limits()
    assert (limits.cell_timeout, limits.memory, limits.processes, limits.output) == (30, 3 * 2**30, 32, 100_000)
    assert limits.notebook_timeout == Limits.NOTEBOOK_FACTOR * limits.cell_timeout == 300


def test_every_limit_is_documented():
    doc = Limits.__doc__
    for f in dataclasses.fields(Limits):
        assert f"{f.name}:" in doc, f"Limits.{f.name} has no entry in the docstring"


def test_the_limits_grade_runs_under():
    assert Limits.for_grading() == Limits()
    limits = Limits.for_grading(cell_timeout=5, memory_mb=1024)
    assert (limits.cell_timeout, limits.notebook_timeout, limits.memory) == (5, 50, 2**30)
    assert Limits.for_grading(5, notebook_timeout=7).notebook_timeout == 7


def test_the_memory_cgroup_leaves_room_above_the_address_space_limit():
    for memory in (2**28, 3 * 2**30, 2**34):
        assert Limits(memory=memory).cgroup_memory() > memory


def test_the_command_line_and_the_options_default_to_limits():
    args = build_parser().parse_args(["grade", "in", "--out", "out"])
    assert args.timeout == Limits.cell_timeout and args.memory * 2**20 == Limits.memory
    assert GradeOptions("in", "out", timeout=args.timeout, memory_mb=args.memory).limits() == Limits()


def test_the_job_carries_every_limit_the_executor_applies():
    limits = Limits(cell_timeout=4, output=77, record=11, records=44, channel_files=3, disk=2**21, memory=2**30,
                    processes=9, open_files=99)
    with Sandbox(limits, warm=False) as box:
        job = box.job([{"index": 0, "source": "1"}], seed=5, limits=limits)
    assert isinstance(job, JobMessage)
    assert (job.cell_timeout, job.output, job.record, job.records, job.channel_files, job.disk, job.seed) == \
        (4, 77, 11, 44, 3, 2**21, 5)
    assert job.rlimits == {"memory": 2**30, "processes": 9, "file_size": 2**21, "open_files": 99}
    assert job.uid == box.uid
