"""URLs: /health (public), /api/v1/ (REST API), /api/schema/ + /api/docs/ (OpenAPI), /admin/, dashboard."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from forgery_site import frontend
from forgery_site.health import health

# REST API v1: adding an app's API is one line here.
api_v1 = [
    path("", include("accounts.urls")),
    path("", include("catalog.urls")),
    path("", include("modelhub.urls")),
    path("", include("rounds.urls")),
    path("", include("rounds.api_selection")),
    path("", include("labeling.urls")),
    path("", include("forgery_site.operations_api")),  # admin: workers and queues
]

urlpatterns = [
    path("health", health, name="health"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script from a URL, so the page needs no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
    path("", include(frontend.urlpatterns)),  # dashboard pages (login, datasets, rounds, ...)
]


def not_found(request, exception=None):
    """404 in the API's own format (JSON ``{"detail", "code"}``) for /api/ paths, Django's page elsewhere:
    a client that asks for ``/api/v1/datasets/abc/`` gets the documented error body, not HTML."""
    if request.path.startswith("/api/"):
        from django.http import JsonResponse

        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


handler404 = not_found
