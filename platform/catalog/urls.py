from django.urls import path

from catalog import apis

urlpatterns = [
    path("datasets/", apis.DatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/<int:dataset_id>/", apis.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("datasets/<int:dataset_id>/imports/", apis.DatasetImportApi.as_view(), name="dataset-imports"),
    path("datasets/<int:dataset_id>/expand/", apis.DatasetExpandApi.as_view(), name="dataset-expand"),
    path("imports/<int:job_id>/", apis.ImportDetailApi.as_view(), name="import-detail"),
    path("imports/<int:job_id>/videos/", apis.ImportVideosApi.as_view(), name="import-videos"),
    path("samples/", apis.SampleListApi.as_view(), name="sample-list"),
    path("samples/<int:sample_id>/", apis.SampleDetailApi.as_view(), name="sample-detail"),
    path("samples/<int:sample_id>/media/", apis.SampleMediaApi.as_view(), name="sample-media"),
]
