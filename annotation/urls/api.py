from __future__ import annotations

from django.urls import path

from annotation import apis

urlpatterns = [
    path("campaigns/", apis.CampaignListApi.as_view(), name="api-campaigns"),
    path("campaigns/<int:campaign_id>/next/", apis.ComparisonNextApi.as_view(), name="api-next"),
    path("judgments/", apis.JudgmentSubmitApi.as_view(), name="api-judgment-submit"),
    path("assignments/skip/", apis.AssignmentSkipApi.as_view(), name="api-skip"),
    path("assignments/skip/undo/", apis.AssignmentSkipUndoApi.as_view(), name="api-skip-undo"),
    path("campaigns/<int:campaign_id>/judgments/", apis.JudgmentListApi.as_view(),
         name="api-judgments"),
    path("campaigns/<int:campaign_id>/import/", apis.ComparisonImportApi.as_view(),
         name="api-import"),
    path("campaigns/<int:campaign_id>/exports/", apis.PreferenceExportCreateApi.as_view(),
         name="api-export-create"),
    path("exports/<int:export_id>/", apis.PreferenceExportDetailApi.as_view(),
         name="api-export-detail"),
    path("exports/<int:export_id>/download/", apis.PreferenceExportDownloadApi.as_view(),
         name="api-export-download"),
]
