"""The experiments REST API, mounted under ``api/v1/experiments/`` (config/urls.py)."""

from __future__ import annotations

from django.urls import path

from evaluation import apis

urlpatterns = [
    path("", apis.ExperimentCollectionApi.as_view(), name="api-experiments"),
    path("<int:experiment_id>/", apis.ExperimentDetailApi.as_view(), name="api-experiment"),
    path("<int:experiment_id>/cancel/", apis.ExperimentCancelApi.as_view(),
         name="api-experiment-cancel"),
]
