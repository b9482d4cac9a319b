"""The dashboard's pages: server-rendered Django templates from ``frontend/templates``.

Pages read through the apps' selectors (never raw SQL) and render a first, complete view without
JavaScript; the small scripts in ``frontend/static/frontend/`` then call the platform's own REST API with
the session cookie for what changes (round progress, imports, uploads, launches). Every write goes
through the API, so the dashboard can never do what the API refuses.

Roles: admins see everything; annotators see the annotation queue and the detector "try it" page and get
403 on admin pages; anonymous visitors are sent to the login page.
"""

from __future__ import annotations

import mimetypes
from functools import wraps

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import Count, Q
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import path

from catalog.selectors import dataset_list
from forgery_site.api import is_platform_admin
from forgery_site.errors import NotFound

LOGIN_URL = "/login/"
GALLERY_PAGE = 24
VIDEOS_PAGE = 8  # video rows per gallery page (grouped view)
FRAMES_PER_VIDEO = 48  # frames shown in one video's strip


def _role(user) -> str:
    if is_platform_admin(user):
        return "admin"
    return "annotator" if user.groups.filter(name="annotator").exists() else "none"


def page(*, admin: bool = False):
    """Login required (redirect to the login page); ``admin`` pages answer 403 to everyone else."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            role = _role(request.user)
            if admin and role != "admin":
                raise PermissionDenied("This page needs the admin role.")
            if role == "none":
                raise PermissionDenied("Your account has no role yet: ask an admin for one.")
            request.role = role
            try:
                return view(request, *args, **kwargs)
            except NotFound as exc:  # the selectors' domain error, as the page's 404
                raise Http404(str(exc)) from None

        return login_required(wrapper, login_url=LOGIN_URL)

    return decorate


def _render(request, template: str, context: dict | None = None, status: int = 200):
    base = {
        "role": getattr(request, "role", _role(request.user)),
        "label_studio_url": settings.LABEL_STUDIO_PUBLIC_URL or settings.LABEL_STUDIO_URL,
    }
    if base["role"] == "admin":  # a reset or replaced Label Studio is said on every admin page
        from labeling.instance import instance_state

        base["label_studio_state"] = instance_state()
    return render(request, template, {**base, **(context or {})}, status=status)


# ------------------------------------------------------------------------------------------ pages
@page()
def dashboard(request):
    if request.role != "admin":
        return redirect("page-annotation")
    from modelhub.selectors import detector_version_list
    from rounds.models import Round

    return _render(
        request,
        "dashboard.html",
        {
            "datasets": dataset_list()[:10],
            "rounds": Round.objects.select_related("dataset").order_by("-id")[:10],
            "versions": detector_version_list()[:5],
        },
    )


@page(admin=True)
def datasets(request):
    return _render(request, "datasets.html", {"datasets": dataset_list()})


def _gallery_filters(request, dataset_id: int) -> dict:
    filters = {"dataset": dataset_id}
    for key in ("split", "label", "manipulation"):
        value = request.GET.get(key, "").strip()[:64]
        if "\x00" in value:  # PostgreSQL cannot compare against a NUL: a 400, not a 500
            raise BadRequest(f"the {key} filter contains a NUL character")
        if value:
            filters[key] = value
    has_mask = request.GET.get("has_mask", "")
    if has_mask in ("true", "false"):
        filters["has_mask"] = has_mask == "true"
    return filters


@page(admin=True)
def dataset_detail(request, dataset_id: int):
    from django.core.paginator import Paginator

    from catalog.models import Sample, Video
    from catalog.selectors import dataset_get, sample_list
    from modelhub.selectors import detector_version_list

    dataset = dataset_get(dataset_id=dataset_id)
    filters = _gallery_filters(request, dataset_id)
    has_videos = Video.objects.filter(dataset_id=dataset_id).exists()
    view = request.GET.get("view", "")
    view = view if view in ("videos", "frames") else ("videos" if has_videos else "frames")
    video_rows = None
    if view == "videos":
        paginator = Paginator(_video_groups(filters), VIDEOS_PAGE)
        samples = paginator.get_page(request.GET.get("page"))
        video_rows = _video_rows(dataset_id, filters, list(samples))
    else:
        paginator = Paginator(sample_list(filters=filters), GALLERY_PAGE)
        samples = paginator.get_page(request.GET.get("page"))
    manipulations = (
        Sample.objects.filter(dataset_id=dataset_id).values_list("manipulation", flat=True).distinct()
    )
    query = request.GET.copy()
    query.pop("page", None)
    other_view = request.GET.copy()
    other_view.pop("page", None)
    other_view["view"] = "frames" if view == "videos" else "videos"
    return _render(
        request,
        "dataset_detail.html",
        {
            "dataset": dataset,
            "samples": samples,
            "view": view,
            "video_rows": video_rows,
            "other_view_query": other_view.urlencode(),
            "imports": _recent_imports(dataset_id),
            "filters": filters,
            "query": query.urlencode(),
            "manipulations": sorted(manipulations),
            "versions": detector_version_list()[:20],
            "counts": Sample.objects.filter(dataset_id=dataset_id).aggregate(
                fake=Count("id", filter=Q(label="fake")), masked=Count("id", filter=Q(has_mask=True))
            ),
        },
    )


def _video_groups(filters: dict):
    """One row per video among the filtered samples (frames counted), in the order videos arrived."""
    from django.db.models import Min

    from catalog.selectors import sample_list

    return (
        sample_list(filters=filters)
        .exclude(video="")
        .order_by()
        .values("video")
        .annotate(frame_count=Count("id"), first_id=Min("id"))
        .order_by("first_id")
    )


def _video_rows(dataset_id: int, filters: dict, groups: list[dict]) -> list[dict]:
    """The page's videos: each with its Video record (when imported from a video) and its frames."""
    from catalog.models import Video
    from catalog.selectors import sample_list

    names = [g["video"] for g in groups]
    records = {v.external_id: v for v in Video.objects.filter(dataset_id=dataset_id, external_id__in=names)}
    frames: dict[str, list] = {name: [] for name in names}
    for sample in sample_list(filters=filters).filter(video__in=names).order_by("video", "frame", "id"):
        if len(frames[sample.video]) < FRAMES_PER_VIDEO:
            frames[sample.video].append(sample)
    return [
        {
            "video": g["video"],
            "frame_count": g["frame_count"],
            "record": records.get(g["video"]),
            "frames": frames[g["video"]],
        }
        for g in groups
    ]


def _recent_imports(dataset_id: int) -> list[dict]:
    from catalog.models import ImportJob
    from catalog.video_import import is_video_format, video_progress

    jobs = ImportJob.objects.filter(dataset_id=dataset_id).order_by("-id")[:5]
    return [
        {"job": job, "videos": video_progress(job) if is_video_format(job.format) else None} for job in jobs
    ]


@login_required(login_url=LOGIN_URL)
def sample_mask(request, sample_id: int):
    """The newest collected mask of a sample (PNG), for the gallery's overlay; never the ground truth."""
    from catalog.models import Mask
    from catalog.paths import Confiner, PathError, media_root

    if _role(request.user) == "none":
        raise PermissionDenied("No role.")
    mask = Mask.objects.filter(sample_id=sample_id).order_by("-version").first()
    if mask is None:
        raise Http404("This sample has no mask yet.")
    try:
        absolute, _ = Confiner(media_root()).resolve(mask.path)
    except PathError:
        raise Http404("The mask file is missing.") from None
    return FileResponse(open(absolute, "rb"), content_type=mimetypes.guess_type(absolute)[0] or "image/png")


@page(admin=True)
def rounds(request):
    from modelhub.models import PretrainedWeights
    from rounds.config import DEFAULT_CONFIG, PRESETS
    from rounds.config_schema import DETECTORS, STRATEGIES
    from rounds.models import Round

    return _render(
        request,
        "rounds.html",
        {
            "rounds": Round.objects.select_related("dataset").order_by("-id")[:200],
            "datasets": dataset_list(),
            "detectors": list(DETECTORS),
            "strategies": STRATEGIES,
            "defaults": DEFAULT_CONFIG,
            "weights": PretrainedWeights.objects.order_by("name"),
            "presets": sorted(PRESETS),
            "selected_dataset": request.GET.get("dataset", ""),
        },
    )


@page(admin=True)
def round_detail(request, round_id: int):
    from rounds.selectors import round_get

    round_ = round_get(round_id=round_id)
    return _render(request, "round_detail.html", {"round": round_, "phases": PHASES})


PHASES = ("training", "scoring", "selecting", "annotating", "retraining", "evaluating")


@page()
def annotation(request):
    """The annotator's queue: how to get into Label Studio, then the rounds waiting for masks, with the
    caller's own counts (to do / done / skipped), the next-task button, the instructions and which
    detector drew the drafts."""
    from django.db.models import Count, Q

    from labeling.apis import onboarding_state
    from labeling.models import AnnotationRecord, AnnotatorAccount, SampleAgreement
    from labeling.provisioning import INSTRUCTION, annotator_stream_url, round_model_version
    from rounds.models import AnnotationTask, Round

    account = AnnotatorAccount.objects.filter(user=request.user).first()
    joined = account is not None and account.status == AnnotatorAccount.Status.JOINED
    onboarding = onboarding_state(request.user, link=not joined) if request.role == "annotator" else None
    open_rounds = Round.objects.filter(state="annotating").select_related("dataset").order_by("-id")
    queue = []
    for round_ in open_rounds:
        per_task = int((round_.config or {}).get("annotators_per_task", 1))
        tasks = AnnotationTask.objects.filter(round=round_).annotate(
            answers=Count("ls_annotations", filter=Q(ls_annotations__deleted=False)),
            mine=Count(
                "ls_annotations",
                filter=Q(ls_annotations__annotator=request.user, ls_annotations__deleted=False),
            ),
        )
        records = AnnotationRecord.objects.filter(task__round=round_, annotator=request.user, deleted=False)
        queue.append(
            {
                "round": round_,
                "stream_url": annotator_stream_url(round_id=round_.pk),
                "annotators_per_task": per_task,
                "todo": tasks.filter(mine=0, answers__lt=per_task).exclude(status="skipped").count(),
                "done_by_me": records.filter(was_cancelled=False).count(),
                "skipped_by_me": records.filter(was_cancelled=True).count(),
                "done": tasks.filter(status="annotated").count(),
                "total": tasks.count(),
                "drafts_by": round_model_version(round_),
                "tasks": tasks.select_related("sample").order_by("id")[:50],
            }
        )
    agreement = None
    if request.role == "admin":
        agreement = SampleAgreement.objects.select_related("sample", "round").order_by("mean_iou", "id")[:100]
    return _render(
        request,
        "annotation.html",
        {"queue": queue, "agreement": agreement, "onboarding": onboarding, "instruction": INSTRUCTION},
    )


@page(admin=True)
def detectors(request):
    from modelhub.selectors import alias_list, detector_version_list

    return _render(
        request, "detectors.html", {"versions": detector_version_list()[:200], "aliases": alias_list()}
    )


@page()
def detector_try(request):
    from modelhub.selectors import alias_list, detector_version_list

    return _render(
        request,
        "detector_try.html",
        {
            "versions": detector_version_list()[:200],
            "aliases": alias_list(),
            "selected": request.GET.get("version", ""),
        },
    )


@page(admin=True)
def users(request):
    from django.db.models import Max

    from accounts.selectors import user_list
    from labeling.models import AnnotationRecord, AnnotatorAccount

    accounts = {a.user_id: a for a in AnnotatorAccount.objects.all()}
    last = dict(
        AnnotationRecord.objects.filter(annotator__isnull=False)
        .values_list("annotator")
        .annotate(last=Max("created_at"))
        .values_list("annotator", "last")
    )
    rows = [
        {"user": u, "role": _role(u), "ls": accounts.get(u.pk), "last_annotation": last.get(u.pk)}
        for u in user_list()
    ]
    return _render(request, "users.html", {"users": rows})


def _duration(seconds) -> str:
    """``95`` -> ``1 min 35 s``; ``7300`` -> ``2 h 1 min``; None -> ``–``."""
    if not isinstance(seconds, int | float):
        return "–"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@page(admin=True)
def workers(request):
    """Workers, queues and live rounds (forgery_site.operations); the page then polls the API."""
    from forgery_site import operations
    from forgery_site.operations_queues import BrokerUnavailable, queue_depths

    context = {"workers": None, "queues": None, "error": "", "poll_ms": 3000}
    try:
        snapshot = operations.workers_snapshot()
        queues = queue_depths(consumers=operations.consumers_by_queue(snapshot["workers"]))
    except BrokerUnavailable as exc:
        context["error"] = exc.message
        return _render(request, "workers.html", context)
    for worker in snapshot["workers"]:
        worker["uptime_text"] = _duration(worker["uptime_s"])
        for task in worker["active"]:
            task["runtime_text"] = _duration(task["runtime_s"])
    queues["max_depth"] = max([1, *(q["depth"] for q in queues["queues"])])
    context.update(workers=snapshot, queues=queues)
    return _render(request, "workers.html", context)


class LoginView(auth_views.LoginView):
    template_name = "login.html"
    redirect_authenticated_user = True
    next_page = "/"


urlpatterns = [
    path("login/", LoginView.as_view(), name="page-login"),
    path("logout/", auth_views.LogoutView.as_view(next_page=LOGIN_URL), name="page-logout"),
    path("datasets/", datasets, name="page-datasets"),
    path("datasets/<int:dataset_id>/", dataset_detail, name="page-dataset"),
    path("samples/<int:sample_id>/mask.png", sample_mask, name="page-sample-mask"),
    path("rounds/", rounds, name="page-rounds"),
    path("rounds/<int:round_id>/", round_detail, name="page-round"),
    path("annotation/", annotation, name="page-annotation"),
    path("detectors/", detectors, name="page-detectors"),
    path("detectors/try/", detector_try, name="page-detector-try"),
    path("users/", users, name="page-users"),
    path("workers/", workers, name="page-workers"),
    path("", dashboard, name="dashboard"),
]
