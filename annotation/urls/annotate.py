from __future__ import annotations

from django.urls import path

from annotation.views import annotate as views

urlpatterns = [
    path("", views.home, name="home"),
    path("annotate/", views.annotate_index, name="annotate-index"),
    path("annotate/<int:campaign_id>/", views.annotate, name="annotate"),
    path("annotate/<int:campaign_id>/start/", views.annotate_start, name="annotate-start"),
    path("annotate/<int:campaign_id>/submit/", views.annotate_submit, name="annotate-submit"),
    path("annotate/<int:campaign_id>/skip/", views.annotate_skip, name="annotate-skip"),
    path("annotate/<int:campaign_id>/skip/undo/", views.annotate_skip_undo,
         name="annotate-skip-undo"),
]
