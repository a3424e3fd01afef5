'''Exercise checks: ``check("<chapter>.<n>", answer)`` is all a check cell calls.

A check cell in a notebook is exactly::

    from backprop_lab.checks import check
    check("2.1", sin_cubed_backward)

Practice mode (the book, JupyterLab, nbval): the check draws the exercise's cases from the
public seed, runs the answer, asks the oracle for the verdict in the same process and prints
it. A pass prints a short deterministic summary (what nbval compares); a failure prints the
diagnosis and Run All goes on, unless ``BACKPROP_LAB_STRICT=1`` is set (nbval of the student
edition, the grader): then it raises :class:`CheckFailure`.

Grading mode (``BACKPROP_LAB_CHECK_DIR=<dir>``): the check reads the arguments the grader
wrote to ``<dir>/inputs/<id>.pkl``, runs the answer, writes what it returned as data to
``<dir>/outputs/<id>.npz`` and ``<id>.json``, and prints one fixed line. The kernel never
sees a seed, an expected value, or the oracle; the grader judges afterwards with
``backprop_lab.checks.oracle.verdict``.

Writing the check of a new exercise
===================================

Three files, by chapter topic (not by number), each found automatically:

* ``backprop_lab/checks/oracle/<topic>.py`` (trusted, hidden from grading kernels): one spec
  per exercise, registered by id. It says how cases are drawn, what is expected (finite
  differences, the engine, a slow obviously-correct version, or a property; never a copy of
  the answer), the tolerance, the hypotheses that diagnose wrong answers, and optionally a
  cost bound and the package functions the answer must not call.
* ``backprop_lab/checks/drivers/<topic>.py`` (kernel side): the forward passes the specs use,
  marked ``@forward_pass`` (a cost check times the answer against one of them in the
  kernel), and a driver if the answer is not called as ``answer(*args)``. No answers and no
  expected values here.
* ``tests/test_exercises_<topic>.py``: the planted-bug table (below).

A backward-rule spec (the answer is ``sin_cubed_backward(upstream, w)``)::

    # drivers/chain_rule.py
    @forward_pass
    def sin_cubed(w):
        return np.sin(w**2) ** 3

    # oracle/chain_rule.py
    register(BackwardSpec(
        id="2.1",
        title="sin_cubed_backward",          # the function the exercise asks for
        forward=sin_cubed,                    # expected: finite differences of it
        inputs={"w": (5,)},                   # drawn uniformly from [low, high) = [-2, 2)
        outputs=("dw",),                      # default: "d" + each input's name
        bugs=[                                # the hypotheses that fit THIS exercise
            Bug("cos taken at w",
                "The cos factor is evaluated at w; it belongs at z = w**2, ...",
                variant=lambda c: c.upstream * 3 * np.sin(c.w**2) ** 2 * np.cos(c.w) * 2 * c.w),
            Bug("inner derivative dropped", "The factor dz/dw = 2w ... is missing.",
                variant=lambda c: c.expected[0] / (2 * c.w)),
        ],
        cost=Cost(multiple=10, inputs={"w": (200_000,)}),
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    ))

A case ``c`` has the inputs by name (``c.w``), ``c.upstream``, ``c.expected`` (a tuple in
output order), ``c.forward_value`` and ``c.fd()`` (the finite-difference gradients). A bug's
``variant(c)`` returns what the buggy answer returns on ``c`` (a tuple aligned with the
outputs for several outputs, ``None`` for an output it leaves right); it explains an output
when the student's output is within tolerance of it on every case. Write variants from the
expected values where you can (``2 * c.expected[0]``, a finite difference of a modified
forward), so the oracle never spells out the answer. ``predicate=lambda c, got: ...`` (``got``:
output name -> array or None) covers bugs no single variant describes. A wrong output that
no bug explains gets a verified fact (transposed, not summed over a broadcast axis, opposite
sign, "every entry is 0.5 times the right value" with no guess, the largest relative error
against the tolerance), never a guess. Multi-output rules list ``backward_order`` (e.g.
``("dW2", "db2", "dW1", "db1", "dX")``): the feedback reports every output, in that order,
right or wrong. ``arguments=lambda c: (...)`` changes the call (e.g. ``(c.upstream,
cache)``), ``draw=lambda rng, k: {...}`` the inputs (e.g. forced ties in case 3), and
``expected=`` what finite differences cannot see (the tie rule).

A value spec (the answer is ``fd_gradient(w)``, compared with the engine's gradient)::

    register(ValueSpec(
        id="1.1",
        title="fd_gradient",
        inputs={"w": (6,)},
        outputs=("grad",),
        reference=lambda c: bl.grad(toy_loss_bl)(c.w),
        rtol=1e-7, atol=1e-8,
        bugs=[Bug("divides by h", "Every entry is twice the slope: ...",
                  variant=lambda c: 2 * c.expected[0])],
        forbidden=ENGINE_GRADIENTS + FINITE_DIFFERENCES,
    ))

``JacobianSpec(id, title, forward=, inputs={"x": (5,)})`` compares a Jacobian with
``numdiff.numerical_jacobian``. Cost checks: ``Cost(multiple, inputs)`` makes the answer run
on a large input within ``multiple`` times one forward pass (timed in the kernel, judged by
the oracle), and checks its outputs there by directional derivatives; finite differences and
loops over entries fail with a message that says why. Use it for every backward rule whose
input size the check controls.

The planted-bug table. Every exercise gets at least two rows (exercise, buggy answer source,
a phrase its diagnosis must contain), run through both modes with the helpers of
:mod:`backprop_lab.checks.testing` (see ``tests/test_planted_bugs.py``)::

    from backprop_lab.checks.testing import answer_from_source, grading_verdict, practice_verdict

    PLANTED = [
        ("2.1", """
    def sin_cubed_backward(upstream, w):
        return upstream * 3 * np.sin(w**2) ** 2 * np.cos(w) * 2 * w
    """, "it belongs at z = w**2"),
        ...
    ]

    @pytest.mark.parametrize("exercise, source, phrase", PLANTED)
    def test_planted_bug(exercise, source, phrase, tmp_path):
        answer = answer_from_source(source, {"np": np})
        practice = practice_verdict(exercise, answer)
        graded = grading_verdict(exercise, answer, folder=tmp_path)
        assert not practice["passed"] and phrase in practice["feedback"]
        assert graded["diagnosis"] == practice["diagnosis"]

Take the phrase from the bug's own sentence, so a diagnosis can never silently regress, and
add the right answer as a row that must pass. Run the test and nbval on your notebook.
'''

from __future__ import annotations

import json
import sys

from backprop_lab.checks import seeding
from backprop_lab.checks.errors import CheckFailure
from backprop_lab.checks.legacy import (
    check_backward,
    check_jacobian,
    check_value,
    diagnose,
    numerical_jacobian,
    numerical_vjp,
    rng_for,
)
from backprop_lab.checks.seeding import PUBLIC_SEED

__all__ = [
    "check",
    "CheckFailure",
    "PUBLIC_SEED",
    # deprecated, kept while the grader's fixture uses them
    "check_backward",
    "check_jacobian",
    "check_value",
    "diagnose",
    "numerical_jacobian",
    "numerical_vjp",
    "rng_for",
]


def _emit(text: str) -> None:
    """Print ``text`` (through the grading guard's captured stdout when one is installed)."""
    text = text if text.endswith("\n") else text + "\n"
    guard = sys.modules.get("backprop_lab.grading.guard")
    if guard is not None and guard.installed():
        guard.write(text + guard.stamp())
    else:
        sys.stdout.write(text)


def graded_line(exercise: str) -> str:
    """The one line a check prints in grading mode."""
    return f"Exercise {exercise}: answer recorded for grading."


def run_practice(exercise: str, answers: tuple, seed: int | None = None) -> dict:
    """Practice mode without printing: the verdict dict (the oracle runs in this process)."""
    from backprop_lab.checks import oracle, runner

    seed = seeding.practice_seed() if seed is None else int(seed)
    payload = oracle.payload(exercise, seed)
    arrays, record = runner.run(payload, answers)
    record = json.loads(json.dumps(record))  # exactly what grading mode would read back
    return oracle.judge(exercise, seed, arrays, record)


def run_grading(exercise: str, answers: tuple, folder: str) -> None:
    """Grading mode without printing: read the inputs, run, write the outputs."""
    from backprop_lab.checks import record, runner

    payload = record.read_inputs(folder, exercise)
    arrays, rec = runner.run(payload, answers)
    record.write_outputs(folder, exercise, arrays, rec)


def check(exercise: str, *answers) -> None:
    """Check the answer(s) to ``exercise`` (``"<chapter>.<n>"``) and show the verdict.

    Returns None. Raises :class:`CheckFailure` on a wrong answer only when
    ``BACKPROP_LAB_STRICT=1``; in grading mode it never judges (the grader does).
    """
    __tracebackhide__ = True
    if not isinstance(exercise, str):
        raise TypeError(
            f'check() takes the exercise id first, as in check("4.2", two_layer_backward); '
            f"got {type(exercise).__name__}"
        )
    folder = seeding.check_dir()
    if folder is not None:
        run_grading(exercise, answers, folder)
        _emit(graded_line(exercise))
        return None
    verdict = run_practice(exercise, answers)
    if not verdict["passed"] and seeding.strict():
        raise CheckFailure(verdict["feedback"]) from None
    _emit(verdict["feedback"])
    return None
