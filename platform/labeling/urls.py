from django.urls import path

from labeling.apis import AnnotatorOnboardingApi, LabelStudioWebhookApi

urlpatterns = [
    path("labeling/webhook", LabelStudioWebhookApi.as_view(), name="labeling-webhook"),
    path("labeling/me", AnnotatorOnboardingApi.as_view(), name="labeling-me"),
]
