"""The analysts' alert page: ``graphsentry ui --alerts ALERTS.db`` (docs/alert-page.md).

* :mod:`detector.ui.config`    the typed server settings, checked at the edge (bind, token, TLS);
* :mod:`detector.ui.fields`    one alert's display fields, read defensively from the OCSF finding;
* :mod:`detector.ui.store`     the queue: filtering, sorting, paging and grouping in SQL;
* :mod:`detector.ui.triage`    triage state and its history, in a database of its own;
* :mod:`detector.ui.context`   an alert's evidence flows, subgraph, entity timeline and score history;
* :mod:`detector.ui.knowledge` ATT&CK names, tactics, mitigations and text from the bundled knowledge artifact;
* :mod:`detector.ui.server`    the HTTP server (JSON API, static pages, CSRF, CSP, auth);
* :mod:`detector.ui.cli`       the ``ui`` subcommand, ``ui export-verdicts`` and ``serve --ui``;
* :mod:`detector.ui.screenshots` the docs' screenshots (headless Chromium).

Static pages and the vendored cytoscape.js (with its licence) are under ``static/``.
"""
