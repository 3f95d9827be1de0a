"""Transaction streams, ingest layer: reading and windowing transaction inputs (:mod:`.data`) and
transaction windows as heterogeneous graphs with per-node history (:mod:`.graph`).

One pipeline per stream kind, in the same three layers (a layer imports only the ones before it)::

    layer      flows                                    transactions (fraud)
    ingest     readers/, windows.py, graph.py           fraud/data.py, fraud/graph.py
    detector   layers/, models/, bundle.py, scoring/    fraud/conv.py, fraud/model.py, fraud/bundle.py,
                                                        fraud/scoring.py
    training   pretrain/, cli/                          fraud/loop.py, fraud/api.py, fraud/cli.py,
                                                        fraud/metrics.py, fraud/simulate.py
"""
