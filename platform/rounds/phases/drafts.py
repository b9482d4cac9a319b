"""Draft masks for a round's selection, from the primary detector's explanation maps."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from catalog.storage import atomic_write_bytes
from rounds import selectors
from rounds.models import Selection
from rounds.phases.common import _device

DRAFT_THRESHOLD = 0.5  # explanation maps are max-normalised to [0, 1]; half the peak marks the draft


def draft_relative(round_id: int, sample_id: int) -> str:
    """Where the draft mask of a selected sample lives, relative to MEDIA_ROOT."""
    return f"rounds/{round_id}/drafts/{sample_id}.png"


def write_drafts(*, round_id: int) -> int:
    """Draft masks for the round's selection: the primary detector's explanation map, thresholded at
    half its peak and resized to the sample's resolution, written (temp file + rename) as
    ``MEDIA_ROOT/rounds/<round id>/drafts/<sample id>.png`` (``draft_relative``) where
    ``labeling.provisioning`` picks them up as Label Studio predictions, so annotators correct a draft
    instead of drawing from nothing, and ``rounds.phases.draft_quality`` compares them with the masks
    that come back. Idempotent: existing drafts are kept. Returns the number written."""
    import cv2
    import numpy as np
    import torch

    from ml.data.dataset import ForgeryDataset
    from ml.training import load_detector

    round_ = selectors.round_get(round_id=round_id)
    models = (round_.progress.get("models") or {}).get("scoring") or {}
    primary = round_.config["detectors"][0]
    if primary not in models:
        return 0
    root = Path(settings.MEDIA_ROOT)
    picked = list(Selection.objects.filter(round_id=round_id).select_related("sample").order_by("rank"))
    todo = [sel.sample for sel in picked if not (root / draft_relative(round_id, sel.sample_id)).is_file()]
    if not todo:
        return 0
    device = _device(round_.config)
    detector, _meta = load_detector(Path(settings.MEDIA_ROOT) / models[primary]["model"], map_location=device)
    size = int(models[primary].get("image_size") or round_.config["image_size"])
    rows = [{"id": s.external_id, "path": s.path, "label": s.label, "video": s.video, "mask_path": None,
             "region_targets": s.region_targets} for s in todo]  # fmt: skip
    dataset = ForgeryDataset(rows, root, size, normalization=detector.preprocessing())
    written = 0
    for start in range(0, len(todo), 32):
        chunk = range(start, min(len(todo), start + 32))
        image = torch.stack([dataset[i]["image"] for i in chunk]).to(device)
        maps = detector.predict(image).explanation.float().cpu().numpy()
        for i, heat in zip(chunk, maps, strict=True):
            sample = todo[i]
            full = cv2.resize(heat, (sample.width, sample.height), interpolation=cv2.INTER_LINEAR)
            draft = np.where(full >= DRAFT_THRESHOLD, 255, 0).astype(np.uint8)
            encoded, png = cv2.imencode(".png", draft)
            if not encoded:
                raise RuntimeError(f"could not encode the draft mask of sample {sample.pk}")
            target = root / draft_relative(round_id, sample.pk)
            atomic_write_bytes(target, png.tobytes(), what=f"the draft of sample {sample.pk}")
            written += 1
    return written
