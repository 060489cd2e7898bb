"""The researcher's data page (snapshots, exports, downloads), mounted under ``data/``."""

from __future__ import annotations

from django.urls import path

from annotation.views import data as views

urlpatterns = [
    path("", views.data_home, name="data-home"),
    path("snapshots/", views.data_snapshot_create, name="data-snapshot-create"),
    path("snapshots/<int:snapshot_id>/download/", views.data_snapshot_download,
         name="data-snapshot-download"),
    path("exports/", views.data_export_create, name="data-export-create"),
    path("exports/<int:export_id>/row/", views.data_export_row, name="data-export-row"),
    path("exports/<int:export_id>/cancel/", views.data_export_cancel,
         name="data-export-cancel"),
    path("exports/<int:export_id>/download/", views.data_export_download,
         name="data-export-download"),
]
