from django.urls import path

from labeling.apis import LabelStudioWebhookApi

urlpatterns = [
    path("labeling/webhook", LabelStudioWebhookApi.as_view(), name="labeling-webhook"),
]
