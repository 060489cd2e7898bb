"""Quality dashboards, mounted under ``quality/`` (config/urls.py)."""

from __future__ import annotations

from django.urls import path

from annotation.views import quality as views

urlpatterns = [
    path("", views.quality_index, name="quality-index"),
    path("me/", views.my_quality, name="my-quality"),
    path("campaigns/<int:campaign_id>/", views.campaign_quality, name="quality-campaign"),
    path("campaigns/<int:campaign_id>/annotators/", views.annotator_table,
         name="quality-annotators"),
    path("campaigns/<int:campaign_id>/annotators/<str:username>/", views.annotator_timeline,
         name="quality-annotator-timeline"),
    path("campaigns/<int:campaign_id>/annotators/<str:username>/unpause/",
         views.annotator_unpause, name="quality-annotator-unpause"),
    path("campaigns/<int:campaign_id>/recompute/", views.quality_recompute,
         name="quality-recompute"),
    path("campaigns/<int:campaign_id>/alerts/<int:alert_id>/acknowledge/",
         views.drift_alert_acknowledge, name="quality-alert-acknowledge"),
]
