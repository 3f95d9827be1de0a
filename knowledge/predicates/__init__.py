"""Network-observable behaviour predicates computed over one window of flows.

A *predicate* is a named behaviour that can be seen in flow records (a port scan,
a flood, beaconing...). Each one maps a window table in ``FLOW_SCHEMA`` to one
activation per flow (edge) in ``[0, 1]``: 0 = behaviour absent, 1 = clearly present.
Group predicates (e.g. "one source touches many destinations on one port") give
every flow the value of its group, so the flows that make up a scan all light up.
Per-node activations are the maximum over the node's incident flows.

Everything is vectorised: group-bys go through ``dictionary_encode`` codes,
``np.unique(..., return_inverse=True)`` and ``np.bincount``; there is no per-row
Python loop. Thresholds are fixed, documented constants taken from the usual
operational definitions (e.g. a horizontal scan starts at 5 distinct destinations),
never fitted on labels.

The package holds one idea per module:

* :mod:`.ports` - port roles, connection states and address classes;
* :mod:`.kernels` - group ids, distinct counts, port lookups, per-node max;
* :mod:`.context` - :class:`WindowContext`, one window's columns and group keys;
* :mod:`.definitions` - the behaviour definitions, one function per predicate;
* :mod:`.registry` - the table :data:`PREDICATES` with scopes and family tags;
* :mod:`.evaluate` - all predicates over one or many windows.

The registry :data:`PREDICATES` keeps the order, which fixes the feature columns;
its ``description`` strings are what the text extractors (embedding, llm) see.
"""
from __future__ import annotations

from knowledge.predicates.context import WindowContext
from knowledge.predicates.definitions import ramp
from knowledge.predicates.evaluate import compute_predicates, compute_predicates_many, concat_windows
from knowledge.predicates.kernels import node_activations
from knowledge.predicates.registry import PREDICATE_NAMES, PREDICATES, VOCAB_VERSION, Predicate

__all__ = ["Predicate", "PREDICATES", "PREDICATE_NAMES", "WindowContext", "compute_predicates",
           "compute_predicates_many", "concat_windows", "node_activations", "VOCAB_VERSION", "ramp"]
