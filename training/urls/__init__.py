"""Training pages, mounted under ``training/``; the REST API is in ``training.urls.api``
(``api/v1/training/``). Both mounted in config/urls.py."""

from __future__ import annotations

from django.urls import path

from training import views

urlpatterns = [
    path("", views.run_list, name="training-runs"),
    path("runs/<int:run_id>/", views.run_detail, name="training-run"),
    path("runs/<int:run_id>/metrics/", views.run_metrics, name="training-run-metrics"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="training-run-cancel"),
    path("runs/<int:run_id>/artifacts/<int:artifact_id>/", views.artifact_download,
         name="training-artifact-download"),
    path("sweeps/<int:sweep_id>/", views.sweep_detail, name="training-sweep"),
]
