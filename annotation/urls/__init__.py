"""URL confs, included by ``config.urls``: ``annotate`` (pages), ``quality`` (dashboards) and
``api`` (the REST API)."""
