"""Users API: list/create (admin role) and ``me`` (any authenticated user)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import ROLES
from accounts.selectors import user_list
from accounts.services import user_create, user_role
from forgery_site.api import IsPlatformAdmin, Pagination, StrictSerializer


class UserOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    role = serializers.SerializerMethodField()
    label_studio = serializers.SerializerMethodField(
        help_text="an annotator's Label Studio link: status (invited, joined, removed), user id, login email"
    )

    def get_role(self, user) -> str | None:
        return user_role(user)

    def get_label_studio(self, user) -> dict | None:
        account = getattr(user, "ls_account", None)
        if account is None:
            return None
        return {"status": account.status, "ls_user_id": account.ls_user_id, "email": account.ls_email}


class UserListCreateApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema
    permission_classes = [IsPlatformAdmin]

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "UserCreateInput"

        username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
        password = serializers.CharField(
            write_only=True,
            min_length=8,
            help_text="at least 8 characters, and not one of the common passwords Django's "
            "CommonPasswordValidator lists (refused with 400 and errors.password)",
        )
        role = serializers.ChoiceField(choices=ROLES)
        email = serializers.EmailField(required=False, default="")

    @extend_schema(responses=UserOutputSerializer(many=True))
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(user_list(), request, view=self)
        return paginator.get_paginated_response(UserOutputSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: UserOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        return Response(UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class UserMeApi(APIView):
    permission_classes = [IsAuthenticated]  # an account without a role may see that it has none

    @extend_schema(responses=UserOutputSerializer)
    def get(self, request):
        return Response(UserOutputSerializer(request.user).data)
