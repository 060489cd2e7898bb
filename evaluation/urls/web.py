"""Gap pages, mounted under ``gap/`` (config/urls.py); the REST API is in
``evaluation.urls.api``."""

from __future__ import annotations

from django.urls import path

from evaluation import views

app_name = "evaluation"

urlpatterns = [
    path("", views.gap_home, name="gap_home"),
    path("experiments/<int:experiment_id>/", views.experiment_detail, name="experiment"),
    path("charts/<slug:name>.<slug:fmt>", views.chart, name="chart"),
]
