"""The training REST API, mounted under ``api/v1/training/`` (config/urls.py)."""

from __future__ import annotations

from django.urls import path

from training import apis

urlpatterns = [
    path("runs/", apis.TrainingRunCollectionApi.as_view(), name="api-training-runs"),
    path("runs/<int:run_id>/", apis.TrainingRunDetailApi.as_view(), name="api-training-run"),
    path("runs/<int:run_id>/metrics/", apis.TrainingRunMetricsApi.as_view(),
         name="api-training-run-metrics"),
    path("runs/<int:run_id>/cancel/", apis.TrainingRunCancelApi.as_view(),
         name="api-training-run-cancel"),
    path("sweeps/", apis.SweepCreateApi.as_view(), name="api-training-sweep-create"),
    path("sweeps/<int:sweep_id>/", apis.SweepDetailApi.as_view(), name="api-training-sweep"),
]
