"""backprop_lab.explore.transformer (Chapter 15, capstone 2)."""

import numpy as np
import pytest

import backprop_lab as bl
from backprop_lab.explore import transformer as tf

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_layer_norm_matches_numpy_and_passes_gradcheck():
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    got = tf.layer_norm(bl.tensor(x), bl.tensor(g), bl.tensor(b)).numpy()
    mu, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    np.testing.assert_allclose(got, (x - mu) / np.sqrt(var + 1e-5) * g + b)
    assert bl.gradcheck(tf.layer_norm, x, g, b).passed


def test_copy_back_task_targets():
    tokens, targets = tf.copy_back_task(4, 6, 5, lag=2, seed=1)
    assert np.all(targets[:, :2] == -1)
    np.testing.assert_array_equal(targets[:, 2:], tokens[:, :-2])


def test_checkpointing_keeps_gradients_and_lowers_the_peak():
    model = tf.TinyTransformer(vocab=5, d=8, hidden=16, seed=1)
    tokens, targets = tf.copy_back_task(4, 32, 5, seed=2)
    base = tf.step_memory(model, tokens, targets)
    both = tf.step_memory(model, tokens, targets, ("attention", "mlp"))
    for k in base["grads"]:
        np.testing.assert_allclose(both["grads"][k], base["grads"][k], atol=1e-12)
    assert both["peak"] < base["peak"] and both["recompute_flops"] > 0


def test_unknown_checkpoint_name_is_refused():
    model = tf.TinyTransformer(vocab=5, d=8, hidden=16)
    tokens, _ = tf.copy_back_task(2, 4, 5)
    with pytest.raises(ValueError, match="checkpoint may name"):
        model.forward(tokens, ("ffn",))


def test_short_training_reduces_the_loss():
    model = tf.TinyTransformer(vocab=5, d=16, hidden=32, seed=0)
    losses = tf.train(model, steps=30, batch=16, length=8)
    assert losses[-1] < 0.5 * losses[0]


def test_whole_model_gradcheck_on_a_tiny_instance():
    model = tf.TinyTransformer(vocab=3, d=4, hidden=6, max_len=5, seed=3)
    tokens, targets = tf.copy_back_task(2, 5, 3, seed=4)
    names = ["Wq", "Wk", "W1", "E"]

    def loss_of(*arrays):
        saved = {n: model.params[n] for n in names}
        try:
            for n, a in zip(names, arrays):
                model.params[n] = a
            return model.loss(tokens, targets)
        finally:
            model.params.update(saved)

    report = bl.gradcheck(loss_of, *[model.params[n].numpy() for n in names], rtol=1e-5)
    assert report.passed, str(report)


def test_memory_view_and_explorer():
    import matplotlib.pyplot as plt

    fig = tf.memory_view(8, "both")
    assert len(fig.axes) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="checkpointing must be one of"):
        tf.memory_view(8, "all")
    assert tf.memory_explorer() is not None
