"""backprop_lab.checks: check(), practice and grading mode, the oracle's API, the records."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backprop_lab.checks import CheckFailure, check, oracle, record
from backprop_lab.checks.seeding import CHECK_DIR_ENV, LEGACY_SEED_ENV, PUBLIC_SEED, STRICT_ENV
from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

CHAPTERS_1_5 = [i for i in oracle.ids() if int(i.split(".")[0]) <= 5]


def sigmoid_backward(upstream, x):
    s = 1.0 / (1.0 + np.exp(-x))
    return upstream * s * (1.0 - s)


def sigmoid_wrong(upstream, x):
    return upstream * x * (1.0 - x)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (STRICT_ENV, CHECK_DIR_ENV, LEGACY_SEED_ENV):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- practice mode


def test_practice_pass_prints_a_short_deterministic_summary(capsys):
    assert check("5.4", sigmoid_backward) is None
    first = capsys.readouterr().out
    assert first == (
        "Exercise 5.4 (sigmoid_backward): passed on 2 cases.\n"
        "  Cost: within 10x one forward pass on a large input.\n"
    )

    def sigmoid_backward_2(upstream, x):  # same values, other rounding, prints and warns
        print("debug")
        np.log(-1.0)
        e = np.exp(-x)
        return upstream * e / (1.0 + e) ** 2

    sigmoid_backward_2.__name__ = "sigmoid_backward"
    check("5.4", sigmoid_backward_2)
    again = capsys.readouterr()
    assert again.out == first and again.err == ""


def test_practice_failure_shows_feedback_and_goes_on(capsys):
    check("5.4", sigmoid_wrong)  # no exception: Run All continues
    out = capsys.readouterr().out
    assert out.startswith("Exercise 5.4 (sigmoid_wrong): not right yet.")
    assert "evaluate it at s, not at x" in out


@pytest.mark.parametrize("env", [(STRICT_ENV, "1"), (LEGACY_SEED_ENV, "77")])
def test_strict_mode_raises(monkeypatch, env):
    monkeypatch.setenv(*env)
    with pytest.raises(CheckFailure, match="evaluate it at s") as info:
        check("5.4", sigmoid_wrong)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert issubclass(CheckFailure, AssertionError)


def test_strict_zero_is_not_strict(monkeypatch, capsys):
    monkeypatch.setenv(STRICT_ENV, "0")
    check("5.4", sigmoid_wrong)
    assert "not right yet" in capsys.readouterr().out


def test_not_implemented_stub(monkeypatch):
    def stub(upstream, x):
        raise NotImplementedError("Exercise 5.4: implement stub")

    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(CheckFailure, match="not implemented yet"):
        check("5.4", stub)


def test_unknown_exercise_and_bad_calls(capsys):
    with pytest.raises(LookupError, match="known: 1.1, 1.2"):
        check("9.99", sigmoid_backward)
    with pytest.raises(TypeError, match='check\\("4.2", two_layer_backward\\)'):
        check(sigmoid_backward)
    check("5.4", 3.0)
    assert "pass your function itself" in capsys.readouterr().out
    check("5.4", sigmoid_backward, sigmoid_backward)
    assert "takes 1 answer" in capsys.readouterr().out
    check("5.4")
    assert "it was given 0" in capsys.readouterr().out


# --------------------------------------------------------------------------- grading mode


def test_grading_mode_round_trip(tmp_path, monkeypatch, capsys):
    seed = 987654321
    written = oracle.prepare(["5.4", "4.2"], seed, tmp_path)
    assert set(written) == {"5.4", "4.2"} and (tmp_path / "outputs").is_dir()
    monkeypatch.setenv(CHECK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(LEGACY_SEED_ENV, "5")  # ignored in grading mode
    check("5.4", sigmoid_wrong)  # never raises, never judges
    assert capsys.readouterr().out == "Exercise 5.4: answer recorded for grading.\n"
    npz, js = record.outputs_paths(tmp_path, "5.4")
    assert npz.is_file() and js.is_file()
    with np.load(npz, allow_pickle=False) as data:
        assert set(data.files) == {"case0/dx", "case1/dx", "cost/dx"}
    v = oracle.verdict("5.4", seed, tmp_path)
    assert not v["passed"] and v["score"] == 0.0 and "evaluate it at s" in v["feedback"]
    json.dumps(v)  # JSON-able
    check("5.4", sigmoid_backward)
    v = oracle.verdict("5.4", seed, tmp_path)
    assert v["passed"] and v["score"] == 1.0 and v["status"] == "passed"
    assert oracle.verdict("4.2", seed, tmp_path)["status"] == "missing"  # its check never ran


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


@pytest.mark.parametrize("exercise", CHAPTERS_1_5)
def test_payload_holds_no_seed_and_no_expected_value(exercise):
    seed = 31337
    payload = oracle.payload(exercise, seed)
    assert set(payload) == {
        "format", "exercise", "title", "driver", "answers", "signature", "arg_names",
        "outputs", "cases", "cost", "watch",
    }  # fmt: skip
    leaves = list(_walk(payload))
    assert seed not in [x for x in leaves if isinstance(x, int)]
    assert all(isinstance(x, (str, int, float, np.ndarray, type(None))) for x in leaves), (
        "only data crosses to the kernel"
    )
    # the only arrays are the answer's arguments (and the forward pass's, to time it)
    rest = {k: v for k, v in payload.items() if k not in ("cases", "cost")}
    assert not any(isinstance(x, np.ndarray) for x in _walk(rest))
    cases = oracle.spec(exercise).build_cases(seed)
    assert [set(c) for c in payload["cases"]] == [{"args"}] * len(cases)
    for sent, case in zip(payload["cases"], cases):
        for a, b in zip(_walk(sent["args"]), _walk(case.args)):
            np.testing.assert_array_equal(a, b)
    if payload["cost"] is not None:
        assert set(payload["cost"]) == {"args", "forward", "forward_args", "multiple"}


KERNEL = textwrap.dedent(
    """
    import importlib.abc, sys

    class Hidden(importlib.abc.MetaPathFinder):  # the sandbox hides the oracle
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[:3] == ["backprop_lab", "checks", "oracle"]:
                raise ImportError("hidden by the sandbox: " + name)
            return None

    sys.meta_path.insert(0, Hidden())
    import numpy as np
    from backprop_lab.checks import check
    from backprop_lab.checks.drivers import _load_all
    _load_all()  # every driver module imports without the oracle

    def two_layer_backward(dYhat, cache):
        X, W1, b1, W2, b2, Z, H = cache
        dZ = (dYhat @ W2.T) * H * (1.0 - H)
        return dZ @ W1.T, X.T @ dZ, dZ.sum(axis=0), H.T @ dYhat, dYhat.sum(axis=0)

    def sigmoid_backward(upstream, x):
        return upstream * x  # wrong
    check("4.2", two_layer_backward)
    check("5.4", sigmoid_backward)
    assert not any(m.startswith("backprop_lab.checks.oracle") for m in sys.modules)
    print("no oracle in the kernel")
    """
)


def test_grading_kernel_runs_without_the_oracle(tmp_path):
    seed = 4242
    oracle.prepare(["4.2", "5.4"], seed, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_LAB_")}
    env[CHECK_DIR_ENV] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Exercise 4.2: answer recorded for grading.",
        "Exercise 5.4: answer recorded for grading.",
        "no oracle in the kernel",
    ]
    v = oracle.verdict("4.2", seed, tmp_path)
    assert v["passed"], v
    assert not oracle.verdict("5.4", seed, tmp_path)["passed"]


def test_missing_inputs_in_grading_mode(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECK_DIR_ENV, str(tmp_path))
    with pytest.raises(record.RecordError, match="prepared no inputs"):
        check("5.4", sigmoid_backward)


# --------------------------------------------------------------------------- the trusted reader


def _graded(tmp_path, exercise="5.4", answer=sigmoid_backward, seed=11):
    return grading_verdict(exercise, answer, folder=tmp_path, seed=seed)


def test_trusted_side_never_unpickles_kernel_files(tmp_path):
    _graded(tmp_path)
    npz, _ = record.outputs_paths(tmp_path, "5.4")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    arr = np.empty(1, dtype=object)
    arr[0] = Payload()
    np.savez(npz, **{"case0/dx": arr})
    v = oracle.verdict("5.4", 11, tmp_path)
    assert not marker.exists()
    assert not v["passed"]


def test_links_special_and_oversize_files_are_refused(tmp_path):
    _graded(tmp_path)
    npz, js = record.outputs_paths(tmp_path, "5.4")
    real = tmp_path / "elsewhere.json"
    real.write_bytes(js.read_bytes())
    js.unlink()
    js.symlink_to(real)
    v = oracle.verdict("5.4", 11, tmp_path)
    assert v["status"] == "missing" and "not a regular file" in v["feedback"]
    js.unlink()
    js.write_text("[" * 200_000 + "]" * 200_000)
    assert oracle.verdict("5.4", 11, tmp_path)["status"] == "missing"
    js.write_text("{" + '"a": 1, ' * 300_000 + '"b": 2}')
    assert "larger than" in oracle.verdict("5.4", 11, tmp_path)["feedback"]
    js.write_text("not json")
    assert "not valid JSON" in oracle.verdict("5.4", 11, tmp_path)["feedback"]


def test_a_record_for_another_exercise_is_refused(tmp_path):
    _graded(tmp_path)
    npz, js = record.outputs_paths(tmp_path, "5.4")
    rec = json.loads(js.read_text())
    rec["exercise"] = "5.3"
    js.write_text(json.dumps(rec))
    assert oracle.verdict("5.4", 11, tmp_path)["status"] == "missing"


def test_inputs_file_is_a_pickle_only_the_grader_writes(tmp_path):
    oracle.prepare(["5.1"], 3, tmp_path)
    payload = pickle.loads(record.inputs_path(tmp_path, "5.1").read_bytes())
    assert payload["exercise"] == "5.1" and payload["outputs"] == ["dx", "dy"]
    with pytest.raises(ValueError, match="looks like"):
        record.inputs_path(tmp_path, "../etc/passwd")


# --------------------------------------------------------------------------- the verdict


def test_feedback_never_contains_an_expected_value():
    bad = [
        ("5.4", sigmoid_wrong),
        ("5.4", lambda up, x: up * 0.0 + 1.0),
        ("5.4", lambda up, x: sigmoid_backward(up, x) * 1.0001),
        ("5.4", lambda up, x: sigmoid_backward(up, x) + np.where(x > 1.5, 0.3, 0.0)),
        ("5.1", lambda up, x, y: (up, up.sum(axis=0) + 0.2)),
    ]
    for exercise, fn in bad:
        v = practice_verdict(exercise, fn)
        assert not v["passed"]
        spec = oracle.spec(exercise)
        for case in spec.build_cases(PUBLIC_SEED):
            for e in case.expected:
                for value in e.reshape(-1):
                    if abs(value) > 1e-3:
                        for text in (f"{value:+.4g}", f"{value:.4g}", f"{value:.3f}"):
                            assert text not in v["feedback"], (exercise, text, v["feedback"])


def test_every_output_is_reported_in_backward_order():
    def buggy(dYhat, cache):
        X, W1, b1, W2, b2, Z, H = cache
        dH = dYhat @ W2.T
        dZ = dH * Z * (1 - Z)  # sigma' taken at Z
        return dZ @ W1.T, X.T @ dZ, dZ.sum(axis=0), H.T @ dYhat, dYhat.sum(axis=0)

    v = practice_verdict("4.2", buggy)
    assert [(r["name"], r["right"]) for r in v["outputs"]] == [
        ("dW2", True), ("db2", True), ("dW1", False), ("db1", False), ("dX", False),
    ]  # fmt: skip
    assert "dW2 right, db2 right, dW1 wrong, db1 wrong, dX wrong" in v["feedback"]
    assert "first wrong gradient in backward order is dW1" in v["feedback"]
    assert v["score"] == pytest.approx(2 / 5)


def test_a_ratio_with_no_known_cause_is_reported_without_a_guess():
    v = practice_verdict("5.4", lambda up, x: 0.5 * sigmoid_backward(up, x))
    (text,) = v["diagnosis"]
    assert "0.5 times the right value" in text
    for guess in ("fan-out", "twice", "batch", "path"):
        assert guess not in text


def test_close_but_not_within_tolerance_says_how_close():
    v = practice_verdict("5.4", lambda up, x: sigmoid_backward(up, x) * (1 + 1e-4 * np.sign(x)))
    (text,) = v["diagnosis"]
    assert "largest relative error is about 1e-4" in text and "allows 1e-5 relative" in text


def test_shape_error_in_student_code_names_their_line():
    source = """
def two_layer_backward(dYhat, cache):
    X, W1, b1, W2, b2, Z, H = cache
    dW2 = H.T @ dYhat
    db2 = dYhat.sum(axis=0)
    dH = dYhat @ W2
    return dH
"""
    v = practice_verdict("4.2", answer_from_source(source))
    text = v["feedback"]
    assert "raised ValueError at line 5 of your code:\n    dH = dYhat @ W2" in text
    assert "dYhat has shape (4, 2) and W2 has shape (5, 2)" in text
    assert "W2.T has shape (2, 5), which fits: a transpose is probably missing." in text
    for frame_noise in ("Traceback", "runner.py", "checks/", "gufunc"):
        assert frame_noise not in text
    assert len(text.splitlines()) <= 6


def test_broadcast_error_suggests_keepdims():
    source = """
def softmax_backward(upstream, x):
    s = softmax_np(x)
    inner = np.sum(upstream * s, axis=1)
    return s * (upstream - inner)
"""
    from backprop_lab.checks.drivers.jacobians import softmax

    fn = answer_from_source(source, {"np": np, "softmax_np": softmax})
    text = practice_verdict("3.2", fn)["feedback"]
    assert "upstream has shape (4, 5) and inner has shape (4,)" in text
    assert "keepdims=True" in text


def test_wrong_signature_says_how_the_check_calls():
    text = practice_verdict("4.2", lambda dYhat: dYhat)["feedback"]
    assert "TypeError" in text and "two_layer_backward(dYhat, cache)" in text


def test_mutating_an_input_fails_even_with_right_values():
    def in_place(upstream, x):
        s = 1.0 / (1.0 + np.exp(-x))
        x *= 0.0  # clobbers the caller's array
        return upstream * s * (1.0 - s)

    v = practice_verdict("5.4", in_place)
    assert not v["passed"] and v["status"] == "mutated"
    assert "changed its input x in place" in v["feedback"]


def test_calling_a_helper_that_computes_the_answer_fails():
    from backprop_lab import numdiff

    def by_numdiff(upstream, x):
        return numdiff.numerical_vjp(lambda v: 1.0 / (1.0 + np.exp(-v)), [x], upstream)[0]

    v = practice_verdict("5.4", by_numdiff)
    assert v["status"] == "forbidden" and "calls backprop_lab.numdiff" in v["feedback"]

    from backprop_lab.explore import two_layer_network

    def two_layer_backward(dYhat, cache):
        X, W1, b1, W2, b2, Z, H = cache
        Y = np.zeros((X.shape[0], W2.shape[1]))
        g = two_layer_network.engine_gradients(X, Y, [W1, b1, W2, b2])
        return None, g["dW1"], g["db1"], g["dW2"], g["db2"]

    v = practice_verdict("4.2", two_layer_backward)
    assert "backprop_lab.explore.two_layer_network.engine_gradients" in v["feedback"]

    import backprop_lab as bl
    from backprop_lab import ops

    def by_registry(upstream, x):
        s = 1.0 / (1.0 + np.exp(-x))
        return bl.REGISTRY["sigmoid"].vjp(np, upstream, (s,), (True,))[0]

    assert "backprop_lab.ops.REGISTRY" in practice_verdict("5.4", by_registry)["feedback"]

    def add_backward(upstream, x, y):
        return upstream, ops.unbroadcast(np, upstream, y.shape)

    assert "backprop_lab.ops.unbroadcast" in practice_verdict("5.1", add_backward)["feedback"]

    def from_the_oracle(upstream, x):
        spec = oracle.spec("5.4")
        return spec.forward(x) * (1 - spec.forward(x)) * upstream

    assert "backprop_lab.checks.oracle" in practice_verdict("5.4", from_the_oracle)["feedback"]

    def unhooks(upstream, x):
        sys.setprofile(None)
        return sigmoid_backward(upstream, x)

    assert "call monitor" in practice_verdict("5.4", unhooks)["feedback"]


def test_forbidden_lists_name_the_helpers_that_ship_answers():
    assert "backprop_lab.explore.two_layer_network.engine_gradients" in oracle.forbidden("4.2")
    assert "backprop_lab.explore.two_layer_network.engine_gradients" in oracle.forbidden("4.1")
    assert "backprop_lab.explore.gates.gate_gradients" in oracle.forbidden("5.4")
    assert "backprop_lab.explore.jacobians.jacobian_matrix" in oracle.forbidden("3.1")
    for exercise in CHAPTERS_1_5:
        names = oracle.forbidden(exercise)
        assert "backprop_lab.transforms.grad" in names and "backprop_lab.numdiff" in names
    from backprop_lab.checks.runner import _codes, _resolve

    for exercise in CHAPTERS_1_5:
        for name in oracle.forbidden(exercise):
            assert _codes(_resolve(name)), f"{name} resolves to no function"


def finite_differences(upstream, w):
    g = np.zeros_like(w)
    for i in range(w.size):
        wp, wm = w.copy(), w.copy()
        wp.flat[i] += 1e-6
        wm.flat[i] -= 1e-6
        g.flat[i] = np.sum(upstream * (np.sin(wp**2) ** 3 - np.sin(wm**2) ** 3)) / 2e-6
    return g


def test_cost_check_fails_finite_differences_and_says_why():
    v = practice_verdict("2.1", finite_differences)
    assert v["status"] == "too_slow" and v["score"] == 0.0
    assert "the values are right, but" in v["feedback"]
    assert "Finite differences" in v["feedback"] and "200,000" in v["feedback"]
    assert v["cost"]["ratio"] > 10


def test_cost_check_sees_an_answer_that_depends_on_the_size():
    def small_only(upstream, w):
        if w.size > 1000:
            return np.zeros_like(w)
        z = w**2
        return upstream * 3 * np.sin(z) ** 2 * np.cos(z) * 2 * w

    v = practice_verdict("2.1", small_only)
    assert not v["passed"] and "wrong on a large input" in v["feedback"]


@pytest.mark.parametrize("exercise", CHAPTERS_1_5)
def test_specs_of_chapters_1_to_5(exercise):
    spec = oracle.spec(exercise)
    assert spec.id == exercise and len(spec.bugs) >= 2
    assert oracle.ids()[: len(CHAPTERS_1_5)] == CHAPTERS_1_5 and len(CHAPTERS_1_5) >= 12
    a, b = spec.build_cases(5), spec.build_cases(5)
    for ca, cb in zip(a, b):
        for x, y in zip(ca.expected, cb.expected):
            np.testing.assert_array_equal(x, y)  # deterministic per seed
    c = spec.build_cases(6)
    assert not np.array_equal(a[0].expected[0], c[0].expected[0])  # and differs across seeds


def test_max_cases_force_ties():
    cases = oracle.spec("5.3").build_cases(PUBLIC_SEED)
    assert not np.any(cases[0].x == cases[0].y)
    assert np.sum(cases[2].x == cases[2].y) >= 1


def test_registry_rejects_bad_specs():
    from backprop_lab.checks.oracle.spec import BackwardSpec, Bug, Cost, ValueSpec

    with pytest.raises(ValueError, match="look like"):
        oracle.register(ValueSpec(id="x", title="f", inputs={"x": (2,)}, reference=lambda c: 0))
    with pytest.raises(ValueError, match="registered twice"):
        oracle.register(ValueSpec(id="5.4", title="f", inputs={"x": (2,)}, reference=lambda c: c.x))
    with pytest.raises(ValueError, match="exactly one"):
        Bug("b", "m")
    with pytest.raises(ValueError, match="needs a BackwardSpec"):
        ValueSpec(id="9.9", title="f", inputs={"x": (2,)}, reference=lambda c: c.x,
                  cost=Cost(10, {"x": (9,)}))  # fmt: skip
    with pytest.raises(ValueError, match="not a registered forward pass"):
        spec = BackwardSpec(id="9.9", title="f", forward=np.tanh, inputs={"x": (2,)},
                            cost=Cost(10, {"x": (9,)}))  # fmt: skip
        oracle.register(spec)
        oracle.payload("9.9", 1)
    oracle._SPECS.pop("9.9", None)
    oracle._built.cache_clear()


def test_output_paths_keep_the_whole_exercise_id():
    from backprop_lab.checks import record

    a = record.outputs_paths("/tmp/x", "5.4")
    b = record.outputs_paths("/tmp/x", "5.2")
    assert a[0].name == "5.4.npz" and a[1].name == "5.4.json"
    assert a != b


def test_value_specs_with_several_outputs_invent_no_backward_order():
    from backprop_lab.checks import oracle
    from backprop_lab.checks.oracle.spec import ValueSpec
    from backprop_lab.checks.testing import practice_verdict

    spec = ValueSpec(
        id="99.1",
        title="two_numbers",
        inputs={"x": (3,)},
        reference=lambda c: (c.x.sum(), c.x.max()),
        outputs=("total", "largest"),
    )
    oracle.register(spec)
    try:
        verdict = practice_verdict("99.1", lambda x: (x.sum(), x.min()))
    finally:
        oracle._SPECS.pop("99.1", None)
    assert not verdict["passed"]
    assert "backward order" not in verdict["feedback"]
    assert "largest" in verdict["feedback"]


def test_a_scalar_output_keeps_its_shape_through_the_grading_record(tmp_path):
    from backprop_lab.checks import record

    record.write_outputs(tmp_path, "4.1", {"case0/result": np.float64(2.5)}, {"status": "ok"})
    npz, _ = record.outputs_paths(tmp_path, "4.1")
    with np.load(npz, allow_pickle=False) as data:
        assert data["case0/result"].shape == ()
