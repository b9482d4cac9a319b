"""The pretrained-weights registry: CLIP weights files that SJEDD rounds start from, by name.

``weights_register`` checks a file once (inside ``MEDIA_ROOT/weights/``, a known open_clip model, an
OpenAI checkpoint only into a QuickGELU config, and the weights really load into that tower, strictly)
and records its sha256, size, the tower's input size and QuickGELU. ``weights_for_launch`` is what a
round launch calls: the file must still be there with the same sha256. torch and open_clip are imported
inside the functions (the web process stays light until an admin registers weights).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.db import IntegrityError, transaction

from catalog.paths import PathError, media_file, media_root
from forgery_site.errors import Conflict, InvalidInput, NotFound
from ml.digest import file_sha256
from modelhub.models import PretrainedWeights

WEIGHTS_DIR = "weights"
SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def weights_root() -> Path:
    root = media_root() / WEIGHTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def weights_import_file(source: str | os.PathLike, name: str) -> str:
    """Copy a file from anywhere the admin can read into ``MEDIA_ROOT/weights/`` (the command line's
    way in; the API only registers files already there). Returns its path relative to the media root."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise InvalidInput("No such weights file.", errors={"file": [f"{source} is not a file."]})
    if source.suffix.lower() not in SUFFIXES:
        raise InvalidInput(
            "Unknown weights format.", errors={"file": [f"Expected one of {', '.join(SUFFIXES)}."]}
        )
    target = weights_root() / f"{name}{source.suffix.lower()}"
    if Path(os.path.realpath(source)) != Path(os.path.realpath(target)):
        from catalog.storage import atomic_copy

        atomic_copy(source, target, what=f"the weights {name}")
    return str(target.relative_to(media_root()))


def weights_register(*, name: str, path: str, model: str, user=None) -> PretrainedWeights:
    from ml.sjedd.towers import (
        PretrainedWeightsError,
        check_pretrained,
        create_towers,
        is_openai_checkpoint,
        tower_info,
    )

    try:
        absolute = media_file(path)
    except PathError as exc:
        raise InvalidInput("Bad weights path.", errors={"path": [str(exc)]}) from None
    if not absolute.is_relative_to(weights_root()):
        raise InvalidInput(
            "Bad weights path.", errors={"path": [f"Weights live under {WEIGHTS_DIR}/ in the media root."]}
        )
    try:
        present = absolute.is_file()
    except OSError:  # a name the file system cannot hold (too long): no such file either
        present = False
    if not present:
        raise NotFound("No such weights file.", errors={"path": [f"{path} does not exist."]})
    try:
        info = tower_info(model)
        check_pretrained(model, str(absolute))
        create_towers(model, str(absolute))  # strict load: the weights must fit this tower
    except (ValueError, FileNotFoundError, PretrainedWeightsError) as exc:
        raise InvalidInput("These weights cannot start that tower.", errors={"model": [str(exc)]}) from None
    try:
        with transaction.atomic():
            return PretrainedWeights.objects.create(
                name=name,
                model=model,
                path=str(absolute.relative_to(media_root())),
                sha256=file_sha256(str(absolute)),
                size_bytes=absolute.stat().st_size,
                image_size=info["image_size"],
                quick_gelu=info["quick_gelu"],
                openai_format=is_openai_checkpoint(absolute),
                created_by=user,
            )
    except IntegrityError:
        raise Conflict(f"Weights named {name!r} exist.", errors={"name": ["Choose another name."]}) from None


def weights_get(name: str) -> PretrainedWeights:
    weights = PretrainedWeights.objects.filter(name=name).first()
    if weights is None:
        known = ", ".join(PretrainedWeights.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise NotFound(f"No registered weights named {name!r} (registered: {known}).")
    return weights


def weights_problem(name: str) -> tuple[PretrainedWeights | None, str | None]:
    """For a launch: the registered weights and None, or None and why they cannot be used."""
    try:
        weights = weights_get(name)
    except NotFound as exc:
        return None, exc.message
    try:
        absolute = media_file(weights.path)
    except PathError as exc:
        return None, f"weights {name!r}: {exc}"
    if not absolute.is_file():
        return None, f"weights {name!r}: the file {weights.path} is missing"
    if absolute.stat().st_size != weights.size_bytes or file_sha256(str(absolute)) != weights.sha256:
        return None, f"weights {name!r}: {weights.path} changed since it was registered (sha256 mismatch)"
    return weights, None


def weights_absolute(weights: PretrainedWeights) -> str:
    return str(media_file(weights.path))
