"""Repository scripts (``python -m scripts.render_results``); not part of the installed packages."""
