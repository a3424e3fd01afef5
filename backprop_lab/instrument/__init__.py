"""Instrumentation built on the engine's listener events (:class:`backprop_lab.tensor.Listener`).

* :mod:`.trace`      record every event, replay the backward pass (``bl.trace``)
* :mod:`.counters`   ops, FLOPs and passes (``bl.count``)
* :mod:`.memory`     bytes saved for backward, live and peak (``bl.measure_memory``)
* :mod:`.checkpoint` recompute activations in backward (``bl.checkpoint``)
* :mod:`.anomaly`    stop at the first NaN/Inf (``bl.detect_anomaly``)
* :mod:`.draw`       the graph as SVG (``bl.draw_graph``)
* :mod:`.plots`      gradient-flow plots (matplotlib, imported on use)
* :mod:`.widgets`    the replay stepper (ipywidgets, imported on use)

Listeners belong to the thread that enters them: a trace records only its own thread's ops.
"""
