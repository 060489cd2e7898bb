"""The researcher's data page (snapshots, exports, downloads), mounted under ``data/``."""

from __future__ import annotations

urlpatterns: list = []
