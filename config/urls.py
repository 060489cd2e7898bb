from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config import handlers

urlpatterns = [
    path("favicon.ico", handlers.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's init script from this URL (?script), not inline, and
    # the template takes its page style from a file: the page runs under the site's
    # script-src and style-src 'self' (settings, Content-Security-Policy).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(
        url_name="api-schema", template_name="api/swagger_ui.html"), name="api-docs"),
    path("api/", include("annotation.urls.api")),
    path("api/v1/training/", include("training.urls.api")),
    path("api/v1/experiments/", include("evaluation.urls.api")),
    path("api/v1/eval-rounds/", include("evaluation.urls.eval_rounds")),
    path("quality/", include("annotation.urls.quality")),
    path("data/", include("annotation.urls.data")),
    path("training/", include("training.urls")),
    path("gap/", include("evaluation.urls.web")),
    path("", include("annotation.urls.annotate")),
]

# The site's error pages; JSON under /api/ (see config.handlers).
handler400 = "config.handlers.bad_request"
handler403 = "config.handlers.permission_denied"
handler404 = "config.handlers.page_not_found"
handler500 = "config.handlers.server_error"
