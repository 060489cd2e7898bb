"""Pages: ``annotate`` (the annotator's htmx pages) and ``quality`` (the dashboards)."""
