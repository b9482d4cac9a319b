"""The one place that talks to Label Studio (label-studio-sdk 2.x). Nothing else imports the SDK client.

Every call goes through ``LabelStudioClient``; its methods take and return plain Python values
(ids, dicts, lists) so services never depend on SDK model classes. Network failures and 5xx answers
become ``LabelStudioUnavailable`` (retried with backoff by the Celery tasks and shown as a degraded
sync); 4xx answers become ``LabelStudioRejected`` (our request was wrong: retrying will not help).

Configuration (``forgery_site.settings``): ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_TOKEN``. When the
token is empty, the token file that ``deploy/labelstudio/ls.sh`` writes on first boot
(``var/labelstudio/admin_token``) is used, so a developer's local server works without exporting it.
The token may be a legacy token or a personal access token (the SDK detects a JWT and refreshes it).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

# httpx logs every request at INFO; one line per Label Studio call drowns the JSON logs.
logging.getLogger("httpx").setLevel(logging.WARNING)

LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true" zoomControl="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="forgery" background="#ff0000"/>
  </BrushLabels>
  <PolygonLabels name="polygon" toName="image" strokeWidth="2" opacity="0.4">
    <Label value="forgery" background="#ff8800"/>
  </PolygonLabels>
  <Choices name="verdict" toName="image" choice="single" showInline="true">
    <Choice value="fake"/>
    <Choice value="real"/>
    <Choice value="unsure"/>
  </Choices>
  <TextArea name="comment" toName="image" placeholder="Comment (optional)" rows="2" editable="true"/>
</View>"""

WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]
WEBHOOK_SECRET_HEADER = "X-Forgerylab-Webhook-Secret"  # noqa: S105 - a header name, not a secret


class LabelStudioError(Exception):
    """Base class for Label Studio failures."""


class LabelStudioUnavailable(LabelStudioError, ConnectionError):
    """Label Studio could not be reached or answered 5xx: retry later."""


class LabelStudioRejected(LabelStudioError):
    """Label Studio refused the request (4xx)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def _token() -> str:
    token = settings.LABEL_STUDIO_TOKEN
    if token:
        return token
    token_file = Path(settings.LABEL_STUDIO_TOKEN_FILE)
    if token_file.is_file():
        return token_file.read_text().strip()
    raise LabelStudioRejected(
        "LABEL_STUDIO_TOKEN is not set and no token file exists (start Label Studio first)"
    )


def _translate(fn):
    """Map SDK / httpx exceptions to the two errors services understand."""
    from label_studio_sdk.core.api_error import ApiError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            code = exc.status_code or 0
            if code >= 500 or code == 0:
                raise LabelStudioUnavailable(f"Label Studio answered {code}: {exc.body}") from exc
            raise LabelStudioRejected(f"Label Studio refused ({code}): {exc.body}", code) from exc
        except (httpx.TransportError, OSError) as exc:
            raise LabelStudioUnavailable(f"Label Studio unreachable: {exc}") from exc

    return wrapper


def _dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


class LabelStudioClient:
    """Thin, typed facade over ``label_studio_sdk.LabelStudio`` with the calls the platform needs."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        from label_studio_sdk import LabelStudio

        self.url = (url or settings.LABEL_STUDIO_URL).rstrip("/")
        self._sdk = LabelStudio(base_url=self.url, api_key=token or _token(), timeout=timeout)
        self._sdk._client_wrapper.httpx_client.httpx_client  # noqa: B018 - fail early if the SDK changed shape

    # -- server ---------------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    @_translate
    def whoami(self) -> dict:
        return _dump(self._sdk.users.whoami())

    # -- projects -------------------------------------------------------------------------------
    @_translate
    def project_create(
        self, *, title: str, description: str, model_version: str, instruction: str = ""
    ) -> int:
        project = self._sdk.projects.create(
            title=title,
            description=description,
            expert_instruction=instruction,
            show_instruction=bool(instruction),
            label_config=LABEL_CONFIG,
            model_version=model_version,
            show_collab_predictions=True,
            show_skip_button=True,
            enable_empty_annotation=True,
            sampling="Uncertainty sampling",
            maximum_annotations=1,
        )
        return int(project.id)

    @_translate
    def project_get(self, project_id: int) -> dict:
        return _dump(self._sdk.projects.get(id=project_id))

    @_translate
    def project_update(self, project_id: int, **fields: Any) -> None:
        self._sdk.projects.update(id=project_id, **fields)

    @_translate
    def project_delete(self, project_id: int) -> None:
        self._sdk.projects.delete(id=project_id)

    @_translate
    def local_storage_create(self, *, project_id: int, path: str, title: str) -> int:
        storage = self._sdk.import_storage.local.create(
            project=project_id, path=path, title=title, use_blob_urls=False
        )
        return int(storage.id)

    @_translate
    def webhook_create(self, *, project_id: int, url: str, secret: str) -> int:
        hook = self._sdk.webhooks.create(
            url=url,
            project=project_id,
            send_payload=True,
            send_for_all_actions=False,
            actions=WEBHOOK_ACTIONS,
            headers={WEBHOOK_SECRET_HEADER: secret},
            is_active=True,
        )
        return int(hook.id)

    @_translate
    def webhook_delete(self, webhook_id: int) -> None:
        self._sdk.webhooks.delete(id=webhook_id)

    @_translate
    def webhooks_list(self, project_id: int) -> list[dict]:
        return [_dump(h) for h in self._sdk.webhooks.list(project=str(project_id))]

    # -- tasks ----------------------------------------------------------------------------------
    @_translate
    def tasks_import(self, *, project_id: int, tasks: list[dict]) -> list[int]:
        """Bulk import; returns the new task ids in the order of ``tasks``."""
        answer = self._sdk.projects.import_tasks(id=project_id, request=tasks, return_task_ids=True)
        return [int(t) for t in (answer.task_ids or [])]

    @_translate
    def tasks_iter(self, *, project_id: int, page_size: int = 100) -> list[dict]:
        """Every task of the project with its annotations (the reconciliation's view of the truth).

        Materialised inside the error translation: a failure on page 3 must not escape as an httpx error.
        """
        return [_dump(t) for t in self._sdk.tasks.list(project=project_id, fields="all", page_size=page_size)]

    @_translate
    def tasks_brief(self, *, project_id: int) -> list[dict]:
        """(id, data, total_annotations) of every task, without annotation bodies."""
        return [
            {"id": t.id, "data": t.data, "total_annotations": t.total_annotations}
            for t in self._sdk.tasks.list(project=project_id, fields="task_only", page_size=500)
        ]

    @_translate
    def task_get(self, task_id: int) -> dict:
        return _dump(self._sdk.tasks.get(id=str(task_id)))

    @_translate
    def task_create(self, *, project_id: int, data: dict) -> int:
        return int(self._sdk.tasks.create(project=project_id, data=data).id)

    # -- annotations ----------------------------------------------------------------------------
    @_translate
    def annotation_get(self, annotation_id: int) -> dict:
        return _dump(self._sdk.annotations.get(id=annotation_id))

    @_translate
    def annotations_list(self, task_id: int) -> list[dict]:
        return [_dump(a) for a in self._sdk.annotations.list(id=task_id)]

    @_translate
    def annotation_create(
        self,
        *,
        task_id: int,
        result: list[dict],
        completed_by: int | None = None,
        lead_time: float | None = None,
    ) -> dict:
        kwargs: dict[str, Any] = {"id": task_id, "result": result}
        if completed_by is not None:
            kwargs["completed_by"] = completed_by
        if lead_time is not None:
            kwargs["lead_time"] = lead_time
        return _dump(self._sdk.annotations.create(**kwargs))

    @_translate
    def annotation_update(self, annotation_id: int, *, result: list[dict]) -> dict:
        return _dump(self._sdk.annotations.update(id=annotation_id, result=result))

    @_translate
    def annotation_delete(self, annotation_id: int) -> None:
        self._sdk.annotations.delete(id=annotation_id)

    # -- users ----------------------------------------------------------------------------------
    @_translate
    def users_list(self) -> list[dict]:
        return [_dump(u) for u in self._sdk.users.list()]

    @_translate
    def user_signup(self, *, email: str, password: str, username: str = "") -> int:
        """Create an organization member who can log into the UI with ``password``.

        Label Studio's users API ignores passwords, so this takes the path a person would: the
        organization's invite link and the sign-up form (CSRF cookie + Referer, as Django requires).
        """
        invite = self._sdk._client_wrapper.httpx_client.request("api/invite", method="GET")
        if invite.status_code != 200:
            raise LabelStudioRejected(f"no invite link ({invite.status_code})", invite.status_code)
        invite_url = invite.json()["invite_url"]
        with httpx.Client(base_url=self.url, timeout=30.0, follow_redirects=False) as web:
            form = web.get(invite_url)
            csrf = web.cookies.get("csrftoken")
            if form.status_code != 200 or not csrf:
                raise LabelStudioRejected(f"sign-up page unavailable ({form.status_code})", form.status_code)
            answer = web.post(
                invite_url,
                data={
                    "csrfmiddlewaretoken": csrf, "email": email, "password": password,
                    "how_find_us": "Other", "allow_newsletters": "false",
                },
                headers={"Referer": f"{self.url}{invite_url}"},
            )  # fmt: skip
        if answer.status_code not in (301, 302):
            raise LabelStudioRejected(
                f"sign-up of {email} refused ({answer.status_code})", answer.status_code
            )
        user = next((u for u in self.users_list() if (u.get("email") or "").lower() == email.lower()), None)
        if user is None:
            raise LabelStudioRejected(f"signed up {email} but the user is not listed")
        if username:
            self._sdk.users.update(id=int(user["id"]), username=username, first_name=username)
        return int(user["id"])

    @_translate
    def user_update(self, user_id: int, **fields: Any) -> None:
        self._sdk.users.update(id=user_id, **fields)

    @_translate
    def invite_path(self) -> str:
        """The organisation's invite link (``/user/signup/?token=...``): where a person signs up with a
        password of their own choosing and joins the organisation."""
        answer = self._sdk._client_wrapper.httpx_client.request("api/invite", method="GET")
        if answer.status_code != 200:
            raise LabelStudioRejected(f"no invite link ({answer.status_code})", answer.status_code)
        return str(answer.json()["invite_url"])

    @_translate
    def organization(self) -> dict:
        """The (first) organisation: id, title, created_at."""
        answer = self._sdk._client_wrapper.httpx_client.request("api/organizations/", method="GET")
        if answer.status_code != 200 or not answer.json():
            raise LabelStudioRejected(f"no organisation listed ({answer.status_code})", answer.status_code)
        return dict(answer.json()[0])

    @_translate
    def organization_rename(self, organization_id: int, title: str) -> None:
        answer = self._sdk._client_wrapper.httpx_client.request(
            f"api/organizations/{int(organization_id)}", method="PATCH", json={"title": title}
        )
        if answer.status_code not in (200, 204):
            raise LabelStudioRejected(
                f"could not rename the organisation ({answer.status_code})", answer.status_code
            )

    @_translate
    def organization_id(self) -> int:
        return int(self.whoami()["active_organization"])

    @_translate
    def member_remove(self, user_id: int) -> bool:
        """Remove a user from the organisation (Label Studio soft-deletes the membership: the account
        stays, its projects and tasks answer 403). False when the user was not a member any more."""
        org = self.organization_id()
        answer = self._sdk._client_wrapper.httpx_client.request(
            f"api/organizations/{org}/memberships/{int(user_id)}/", method="DELETE"
        )
        if answer.status_code == 404:
            return False
        if answer.status_code not in (200, 204):
            raise LabelStudioRejected(f"membership of user {user_id} not removed ({answer.status_code})",
                                      answer.status_code)  # fmt: skip
        return True


@functools.lru_cache(maxsize=4)
def _cached(url: str, token: str) -> LabelStudioClient:
    return LabelStudioClient(url=url, token=token)


def get_client() -> LabelStudioClient:
    """A client for the configured server (cached per URL and token; the SDK client is thread-safe)."""
    return _cached(settings.LABEL_STUDIO_URL, _token())
