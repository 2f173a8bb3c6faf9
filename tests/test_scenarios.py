"""autograder.inside.scenarios and autograder.inside.inputs: the registry, and inputs that tell right from wrong.

The inputs are checked by running every scenario on a spy: bnlib's reference, wrapped so that it
logs what each call receives. With N = 2 every correct batch norm has dx = 0, with N = D a sum
over the wrong axis has the right shape, with dy all ones dx is zero whatever the backward does,
and at unit variance eps's placement changes outputs by ~1e-7: none of that may happen.
"""

from __future__ import annotations

import numpy as np
import pytest
from student_code import ASSIGNMENTS, points

from autograder.course.reference import reference
from autograder.course.spec import INTERFACE, READING, kind_of
from autograder.inside import inputs, scenarios
from autograder.inside.scenarios import SCENARIOS, registrar

CHECKS = sorted(SCENARIOS)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check_id", CHECKS)
def test_every_scenario_belongs_to_its_assignment_and_names_what_it_exercises(check_id):
    sc = SCENARIOS[check_id]
    assert sc.check_id == check_id and sc.family == kind_of(sc.assignment)
    assert sc.targets and set(sc.targets) <= set(INTERFACE[sc.assignment])
    assert sc.backward_of in ("", *sc.targets)
    assert sc.rtol in (1e-6, 1e-4) and sc.behaviour and not sc.behaviour.endswith(".")
    assert check_id in READING


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_an_assignments_notebook_grades_its_scenarios_and_borrows_only_what_it_implements(assignment):
    graded = set(points(assignment))
    assert {c for c, sc in SCENARIOS.items() if sc.assignment == assignment} <= graded
    for check in graded:  # bn-numpy-backward grades forward_train_output too: its students write it
        assert SCENARIOS[check].family == kind_of(assignment)
        assert set(SCENARIOS[check].targets) <= set(INTERFACE[assignment])


def test_only_the_hand_written_backward_checks_watch_for_autograd():
    watching = {c for c, sc in SCENARIOS.items() if sc.backward_of}
    assert watching == {"function_backward_dx", "function_backward_dgamma", "function_backward_dbeta",
                        "module_backward"}


def test_registering_a_check_twice_or_a_backward_outside_the_targets_is_an_error():
    scenario = registrar("bn-numpy-forward", "numpy")
    with pytest.raises(ValueError, match="two scenarios for check 'running_mean'"):
        scenario("running_mean", ("update_running_stats",), "again")(lambda t, rng: None)
    with pytest.raises(ValueError, match="backward_of 'BatchNormFunction' is not one of its targets"):
        scenario("a_new_check", ("bn_forward_train",), "x", backward_of="BatchNormFunction")(lambda t, rng: None)
    assert "a_new_check" not in SCENARIOS
    with pytest.raises(ValueError, match="unknown family 'jax'"):
        registrar("bn-jax", "jax")


def test_run_never_raises_for_the_students_code():
    def bn_forward_train(x, gamma, beta, eps=1e-5):
        raise SystemExit("bye")

    record = scenarios.run("forward_train_output", {"bn_forward_train": bn_forward_train}, 0)
    assert record.facts["error"]["type"] == "SystemExit" and record.facts["error"]["message"] == "bye"
    assert scenarios.run("forward_train_output", {}, 0).facts["missing"] == "bn_forward_train"
    with pytest.raises(KeyError):
        scenarios.run("no_such_check", {}, 0)


# --------------------------------------------------------------------------------------------
# The inputs
# --------------------------------------------------------------------------------------------


def test_inputs_depend_on_the_seed_and_the_check_and_on_nothing_else():
    draw = lambda seed, check: inputs.batch(inputs.rng(seed, check), 4, 3)  # noqa: E731
    assert np.array_equal(draw(1, "running_mean"), draw(1, "running_mean"))
    assert not np.allclose(draw(1, "running_mean"), draw(2, "running_mean"))
    assert not np.allclose(draw(1, "running_mean"), draw(1, "running_var_unbiased"))


def test_a_batch_has_its_own_mean_and_spread_per_feature_and_ncl_keeps_channels():
    rng = inputs.rng(0, "test")
    x = inputs.batch(rng, 400, 6, sd=(0.5, 2.0), centre=2.0)
    assert np.ptp(x.mean(axis=0)) > 0.5 and np.ptp(x.std(axis=0)) > 0.3
    gamma, beta = inputs.affine(rng, 6)
    assert np.all((np.abs(gamma) >= 0.5) & (np.abs(gamma) <= 2.5)) and not np.allclose(beta, 0)
    rm, rv = inputs.running(rng, 6)
    assert np.all(rv > 0.3) and not np.allclose(rm, 0)
    x3 = inputs.ncl(inputs.rng(0, "ncl"), 4, 3, 5)
    assert x3.shape == (4, 3, 5) and x3.flags.c_contiguous


def test_nchw_has_per_channel_and_per_example_statistics_and_examples_per_row_statistics():
    x = inputs.nchw(inputs.rng(0, "nchw"), 6, 4, 5, 7)
    assert x.shape == (6, 4, 5, 7) and x.flags.c_contiguous
    assert np.ptp(x.mean(axis=(0, 2, 3))) > 0.5 and np.ptp(x.std(axis=(0, 2, 3))) > 0.3
    assert np.ptp(x.mean(axis=(1, 2, 3))) > 0.1
    rows = inputs.examples(inputs.rng(0, "rows"), 50, 6)
    assert rows.shape == (50, 6)
    assert np.ptp(rows.mean(axis=1)) > 1.0 and np.ptp(rows.std(axis=1)) > 0.5


def _numpy_spy(log: list) -> dict:
    ref = {**reference("bn-numpy-forward"), **reference("bn-numpy-backward")}

    def bn_forward_train(x, gamma, beta, eps=1e-5):
        log.append(("train", x.copy(), gamma, beta, eps))
        return ref["bn_forward_train"](x, gamma, beta, eps)

    def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
        log.append(("eval", x.copy(), gamma, beta, eps, running_var))
        return ref["bn_forward_eval"](x, gamma, beta, running_mean, running_var, eps)

    def update_running_stats(running_mean, running_var, x, momentum=0.1):
        log.append(("update", x.copy()))
        return ref["update_running_stats"](running_mean, running_var, x, momentum)

    def backward(which):
        def bn_backward(dy, cache):
            log.append(("backward", dy.copy()))
            return ref[f"bn_backward_{which}"](dy, cache)

        return bn_backward

    return {"bn_forward_train": bn_forward_train, "bn_forward_eval": bn_forward_eval,
            "update_running_stats": update_running_stats,
            "bn_backward_staged": backward("staged"), "bn_backward_compact": backward("compact")}


def _eps_matters(var: np.ndarray, eps: float, rtol: float) -> bool:
    """Whether sqrt(var) + eps instead of sqrt(var + eps) changes some output by far more than ``rtol``."""
    right, wrong = np.sqrt(var + eps), np.sqrt(var) + eps
    return bool(np.max(np.abs(right / wrong - 1)) > 100 * rtol)


NUMPY_CHECKS = [c for c in CHECKS if SCENARIOS[c].family == "numpy" and SCENARIOS[c].assignment != "bn-conv"]


@pytest.mark.parametrize("check_id", NUMPY_CHECKS)
def test_numpy_inputs_tell_right_from_wrong(check_id):
    log: list = []
    record = scenarios.run(check_id, _numpy_spy(log), 3)
    assert "error" not in record.facts and log
    for kind, x, *rest in log:
        n, d = x.shape
        if kind in ("train", "update"):
            assert n >= 4 and n != d, (kind, x.shape)
        if kind == "eval":
            assert n == 1 or n != d, x.shape
        if kind in ("train", "eval"):
            gamma, beta = rest[0], rest[1]
            assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)
        if kind == "backward":
            assert np.std(x) > 0.5 and len(np.unique(x)) == x.size, "dy must be random"
    if check_id == "forward_train_eps":
        assert all(_eps_matters(x.var(axis=0), rest[2], 1e-6) for kind, x, *rest in log)
    if check_id == "forward_eval_eps":
        assert all(_eps_matters(rest[3], rest[2], 1e-6) for kind, x, *rest in log)


def _conv_spy(log: list) -> dict:
    """bn-conv's reference, logging ``(layer, x, groups, gamma, beta)`` per forward call and ``("backward", dy)``."""
    ref = reference("bn-conv")

    def forward(layer, name):
        def spy(x, *args):
            groups = args[0] if layer == "gn" else 0
            gamma, beta = args[1:3] if layer == "gn" else args[:2]
            log.append((layer, x.copy(), groups, gamma, beta))
            return ref[name](x, *args)

        return spy

    def backward(name):
        def spy(dy, cache):
            log.append(("backward", dy.copy()))
            return ref[name](dy, cache)

        return spy

    return {"batchnorm2d_forward_train": forward("bn2d", "batchnorm2d_forward_train"),
            "layernorm_forward": forward("ln", "layernorm_forward"),
            "groupnorm_forward": forward("gn", "groupnorm_forward"),
            **{n: backward(n) for n in ("batchnorm2d_backward", "layernorm_backward", "groupnorm_backward")}}


CONV_CHECKS = [c for c in CHECKS if SCENARIOS[c].assignment == "bn-conv"]


@pytest.mark.parametrize("check_id", CONV_CHECKS)
def test_conv_inputs_tell_right_from_wrong(check_id):
    """Wrong axes must show: m = N*H*W != C and H, W != C; N != D; groups of several channels, per-example spreads."""
    log: list = []
    record = scenarios.run(check_id, _conv_spy(log), 3)
    assert "error" not in record.facts and log
    for layer, x, *rest in log:
        if layer == "backward":
            assert np.std(x) > 0.5 and len(np.unique(x)) == x.size, "dy must be random"
            continue
        groups, gamma, beta = rest
        assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)
        if layer == "ln":
            n, d = x.shape
            assert d >= 4 and n != d, x.shape
            assert n == 1 or np.ptp(x.mean(axis=1)) > 0.5, "examples need their own means"
            continue
        n, c, h, w = x.shape
        assert c not in (h, w) and n * h * w >= 4 and n * h * w != c, x.shape
        assert np.ptp(x.mean(axis=(0, 2, 3))) > 0.3, "channels need their own means"
        if layer == "gn":
            assert c % groups == 0 and 2 <= c // groups < c, (c, groups)
            assert np.ptp(x.mean(axis=(1, 2, 3))) > 0.1, "examples need their own means"


TORCH_CHECKS = [c for c in CHECKS if SCENARIOS[c].family == "torch"]


@pytest.mark.parametrize("check_id", TORCH_CHECKS)
def test_torch_inputs_tell_right_from_wrong(check_id):
    pytest.importorskip("torch")
    import bnlib.torch

    log: list = []
    ref = reference("bn-torch")

    class BatchNormFunction:
        @staticmethod
        def apply(x, gamma, beta, eps=1e-5):
            log.append((tuple(x.shape), True))
            return ref["BatchNormFunction"].apply(x, gamma, beta, eps)

    class BatchNorm1d(bnlib.torch.BatchNorm1d):
        def forward(self, x):
            log.append((tuple(x.shape), self.training))
            return super().forward(x)

    record = scenarios.run(check_id, {"BatchNormFunction": BatchNormFunction, "BatchNorm1d": BatchNorm1d}, 3,
                           {"device": "cpu"} if check_id == "module_device" else None)
    assert "error" not in record.facts, record.facts["error"]
    assert log or check_id == "module_state_dict"
    for shape, training in log:
        if training:
            m = shape[0] * (shape[2] if len(shape) == 3 else 1)
            assert m >= 4 and m != shape[1], shape
