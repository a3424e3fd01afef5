"""Anomaly mode names the op and the user's line that produced NaN/Inf."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_lab as bl


def test_forward_nan_names_op_and_line():
    x = bl.tensor([1.0, -1.0], requires_grad=True)
    with pytest.raises(bl.AnomalyError) as info, np.errstate(invalid="ignore"):
        with bl.detect_anomaly():
            y = x * 2.0
            z = bl.log(y)  # log(-2) = nan  <- the line to report
            z.sum().backward()
    err = info.value
    assert err.op == "log" and err.phase == "forward"
    assert err.filename == __file__
    assert "z = bl.log(y)" in err.code
    assert "log produced nan in the forward pass" in str(err)
    assert "z = bl.log(y)" in str(err)


def test_backward_inf_names_op_and_line():
    x = bl.tensor([0.0, 1.0], requires_grad=True)
    with pytest.raises(bl.AnomalyError) as info, np.errstate(divide="ignore"):
        with bl.detect_anomaly():
            s = x**0.5  # finite forward, infinite derivative at 0
            loss = s.sum()
            loss.backward()
    err = info.value
    assert err.op == "pow" and err.phase == "backward"
    assert "s = x**0.5" in err.code
    assert "backward" in str(err)


def test_no_anomaly_passes_and_listener_removed():
    from backprop_lab.tensor import MODE

    x = bl.tensor([1.0, 2.0], requires_grad=True)
    with bl.detect_anomaly():
        bl.exp(x).sum().backward()
    np.testing.assert_allclose(x.grad, np.exp([1.0, 2.0]))
    assert MODE.listeners == ()
    with np.errstate(divide="ignore"):
        bl.log(bl.tensor([0.0]))  # outside anomaly mode nothing stops


def test_inf_from_input_is_reported_as_already_present():
    x = bl.tensor([np.inf, 1.0])
    with pytest.raises(bl.AnomalyError, match="already contained"):
        with bl.detect_anomaly():
            x * 1.0
