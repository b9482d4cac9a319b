"""Draft quality: how close the model's draft masks came to the masks that came back.

For every selected sample of a round, the IoU (``ml.metrics.localization_iou``) of its draft mask
(``rounds.phases.drafts``) with

* ``submitted``: the sample's newest ``Mask`` version, i.e. what training reads (one annotator's mask,
  the consensus of several, or the oracle's), however it arrived: Label Studio ingest or the direct
  oracle path (``rounds.demo_oracle``);
* ``ground_truth``: ``Sample.gt_mask_path``; a real face without one has the empty mask as ground
  truth. Read only when the round evaluates (the data rule of ``rounds.phases``).

Each comparison is aggregated per round as count, mean and median (``iou_summary``). A sample that
cannot be compared is skipped and counted under its reason: no draft or no mask (``draft_missing``,
``no_submitted_mask``, ``no_ground_truth``), a file that cannot be read (``*_unreadable``), escapes the
media root (``*_bad_path``) or has another size than the sample (``*_size_mismatch``), and both masks
empty (``both_empty``: the IoU is undefined). Computed when annotation ends (``submitted`` only) and
again when the round evaluates (both), stored as ``Round.progress["draft_quality"]``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from django.utils import timezone
from PIL import Image

from catalog.models import Mask, Sample
from catalog.paths import PathError, media_file
from labeling import masks
from rounds.models import Selection
from rounds.phases.drafts import draft_relative


def iou_summary(ious: Iterable[float], skipped: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Count, mean and median of the defined IoUs; an undefined one (nan: both masks empty) is skipped
    as ``both_empty`` next to the reasons in ``skipped``. Mean and median are None when nothing counted."""
    reasons = Counter({reason: n for reason, n in (skipped or {}).items() if n})
    values = []
    for value in ious:
        if math.isfinite(value):
            values.append(float(value))
        else:
            reasons["both_empty"] += 1
    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 4) if values else None,
        "median": round(statistics.median(values), 4) if values else None,
        "skipped": sum(reasons.values()),
        "skip_reasons": dict(sorted(reasons.items())),
    }


class _Comparison:
    """The IoUs of one comparison (draft vs something) and the reasons samples were skipped."""

    def __init__(self) -> None:
        self.ious: list[float] = []
        self.skipped: Counter[str] = Counter()

    def add(self, draft, other, problem: str | None) -> None:
        from ml.metrics import localization_iou

        if problem:
            self.skipped[problem] += 1
        else:
            self.ious.append(localization_iou(draft, other))

    def summary(self) -> dict[str, Any]:
        return iou_summary(self.ious, self.skipped)


def _read(relative: str, sample: Sample, what: str):
    """(bool mask at the sample's size, None) or (None, the reason it cannot be used)."""
    try:
        return masks.read_mask_png(media_file(relative), width=sample.width, height=sample.height), None
    except PathError:
        return None, f"{what}_bad_path"
    except masks.MaskRejected:
        return None, f"{what}_size_mismatch"
    except FileNotFoundError:
        return None, f"{what}_missing"
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, f"{what}_unreadable"


def _ground_truth(sample: Sample, shape: tuple[int, ...]):
    import numpy as np

    if sample.gt_mask_path:
        return _read(sample.gt_mask_path, sample, "ground_truth")
    if sample.label == Sample.Label.REAL:
        return np.zeros(shape, dtype=bool), None
    return None, "no_ground_truth"


def round_draft_quality(*, round_id: int, ground_truth: bool) -> dict[str, Any]:
    """The round's draft quality block; ``ground_truth`` False leaves ``ground_truth`` None."""
    picked = list(Selection.objects.filter(round_id=round_id).select_related("sample").order_by("rank"))
    latest = Mask.objects.filter(sample_id__in=[s.sample_id for s in picked])
    latest = latest.exclude(source=Mask.Source.MODEL_DRAFT).order_by("sample_id", "-version")
    submitted_masks = {m.sample_id: m for m in latest.distinct("sample_id")}
    submitted, truth = _Comparison(), _Comparison()
    for selection in picked:
        sample = selection.sample
        draft, problem = _read(draft_relative(round_id, sample.pk), sample, "draft")
        if problem:
            submitted.add(None, None, problem)
            truth.add(None, None, problem)
            continue
        mask = submitted_masks.get(sample.pk) if sample.has_mask else None
        if mask is None:
            submitted.add(draft, None, "no_submitted_mask")
        else:
            submitted.add(draft, *_read(mask.path, sample, "mask"))
        if ground_truth:
            truth.add(draft, *_ground_truth(sample, draft.shape))
    return {
        "selected": len(picked),
        "computed_at": timezone.now().isoformat(),
        "submitted": submitted.summary(),
        "ground_truth": truth.summary() if ground_truth else None,
    }
