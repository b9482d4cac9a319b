from django.urls import path

from accounts.apis import UserListCreateApi, UserMeApi

urlpatterns = [
    path("users/", UserListCreateApi.as_view(), name="user-list"),
    path("users/me/", UserMeApi.as_view(), name="user-me"),
]
