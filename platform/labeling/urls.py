from django.urls import path

from labeling.apis import AnnotatorOnboardingApi, InstanceApi, InstanceReprovisionApi, LabelStudioWebhookApi

urlpatterns = [
    path("labeling/webhook", LabelStudioWebhookApi.as_view(), name="labeling-webhook"),
    path("labeling/me", AnnotatorOnboardingApi.as_view(), name="labeling-me"),
    path("labeling/instance", InstanceApi.as_view(), name="labeling-instance"),
    path("labeling/instance/reprovision", InstanceReprovisionApi.as_view(), name="labeling-reprovision"),
]
