"""URLs of the webhook benchmark's server: the platform's own, plus one trivial authenticated POST.

``POST /bench/trivial`` checks the same shared-secret header as the webhook receiver, parses the JSON
body and answers 200: the cost of getting an authenticated POST through this server configuration
(gunicorn, Django's middleware, DRF) and nothing else. The benchmark compares the receiver with it under
the same burst, so its goal does not depend on the machine. Only the benchmark's gunicorn loads this
module (``ROOT_URLCONF`` through ``DJANGO_SETTINGS_MODULE=bench.webhook_settings``).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from forgery_site.urls import urlpatterns as platform_urlpatterns
from labeling.client import WEBHOOK_SECRET_HEADER


class TrivialApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request: Request) -> Response:
        given = request.headers.get(WEBHOOK_SECRET_HEADER) or ""
        if not hmac.compare_digest(given.encode(), settings.WEBHOOK_SECRET.encode()):
            return Response({"detail": "wrong webhook secret"}, status=403)
        body = request.data
        return Response({"ok": isinstance(body, dict)})


urlpatterns = [path("bench/trivial", TrivialApi.as_view()), *platform_urlpatterns]
