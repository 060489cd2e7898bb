"""The eval-rounds REST API, mounted under ``api/v1/eval-rounds/`` (config/urls.py)."""

from __future__ import annotations

from django.urls import path

from evaluation import apis_eval_rounds as apis

urlpatterns = [
    path("", apis.EvalRoundCollectionApi.as_view(), name="api-eval-rounds"),
    path("<int:round_id>/", apis.EvalRoundDetailApi.as_view(), name="api-eval-round"),
    path("<int:round_id>/compute/", apis.EvalRoundComputeApi.as_view(),
         name="api-eval-round-compute"),
]
