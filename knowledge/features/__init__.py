"""Knowledge-augmented features for a window: predicate activations + technique and tactic scores.

For a window table (FLOW_SCHEMA, edge i = row i) the featurizer computes

* ``a[e, p]``  predicate activations in [0, 1] (:mod:`knowledge.predicates`);
* ``b[e, t] = 1 - prod_p (1 - w[p, t]) ** a[e, p]`` over behaviour predicates: a noisy-OR over the
  predicates linked to technique t with link confidence ``w``. One fully active predicate with
  confidence 0.8 gives 0.8; partial activations raise the exponent smoothly. Computed as one matrix
  product ``1 - exp(a @ log(1 - w))``. ``c[e, t]`` is the same noisy-OR over *context* predicates
  (single-flow facts such as the port or direction, common in benign traffic); the technique score is
  ``s = 1 - (1 - b) * (1 - context_factor * c)``, so context alone never exceeds ``context_factor``
  (0.3, below the top-technique floor) and only sharpens behaviour evidence;
* signature gate: a technique is defined mostly by its strongest behaviour links (its *signature*:
  non-context links with confidence >= ``SIGNATURE_SHARE`` x its strongest non-context link). The score is multiplied by
  ``GATE_FLOOR + (1 - GATE_FLOOR) * max(a over the signature)``, so many weak, generic links cannot
  outscore a technique whose defining behaviour is actually present (noisy-OR alone saturates);
* ``tac[e, c] = max_{t in tactic c} s[e, t]``  tactic scores.

Node rows use the node's predicate activations (max over incident edges) through the same maps.
Column names: ``pred:<name>``, ``tech:<T-id>``, ``tactic:<TA-id>``.

One idea per module: :mod:`.featurizer` (:class:`KnowledgeFeaturizer`), :mod:`.block` (one window's
:class:`KnowledgeBlock` and stacking of blocks), :mod:`.kernels` (the compiled propagation).
"""
from __future__ import annotations

from knowledge.features.block import TOP_MIN_SCORE, KnowledgeBlock, shared_edge_rows, stack_edges, stack_nodes
from knowledge.features.featurizer import DEFAULT_ARTIFACT, GATE_FLOOR, SIGNATURE_SHARE, KnowledgeFeaturizer

__all__ = ["DEFAULT_ARTIFACT", "GATE_FLOOR", "KnowledgeBlock", "KnowledgeFeaturizer", "SIGNATURE_SHARE", "TOP_MIN_SCORE",
           "shared_edge_rows", "stack_edges", "stack_nodes"]
