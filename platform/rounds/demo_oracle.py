"""Oracle masks without Label Studio: each selected sample of a round gets its ground-truth mask (an
empty one for a real face) as the next ``Mask`` version, stored the way the annotation ingest stores
masks. For demos and tests on machines without Label Studio; the normal path is the oracle annotator
answering through Label Studio (``labeling.oracle``), whose masks come back by webhook.
"""

from __future__ import annotations

import io
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from catalog.models import Mask, Sample
from catalog.storage import atomic_copy, atomic_write_bytes, undo_on_error
from rounds.models import Selection


def store_ground_truth_masks(round_id: int) -> int:
    """Masks for every selected sample that has none yet; returns how many were written."""
    import numpy as np
    from PIL import Image

    from ml.data.images import read_mask

    root = Path(settings.MEDIA_ROOT)
    written = 0
    for selection in Selection.objects.filter(round_id=round_id).select_related("sample").order_by("rank"):
        with undo_on_error(), transaction.atomic():  # file first, row second; a rollback removes the file
            sample = Sample.objects.select_for_update().get(pk=selection.sample_id)
            if Mask.objects.filter(sample=sample).exists():
                continue
            version = (Mask.objects.filter(sample=sample).aggregate(v=Max("version"))["v"] or 0) + 1
            relative = f"masks/{sample.dataset_id}/{sample.pk}/v{version}-oracle.png"
            target = root / relative
            what = f"the mask of sample {sample.pk}"
            if sample.gt_mask_path:
                atomic_copy(root / sample.gt_mask_path, target, what=what)
                area = float(read_mask(target).mean())
            else:
                empty = io.BytesIO()
                Image.fromarray(np.zeros((sample.height, sample.width), np.uint8)).save(empty, format="PNG")
                atomic_write_bytes(target, empty.getvalue(), what=what)
                area = 0.0
            Mask.objects.create(
                sample=sample, version=version, source=Mask.Source.ORACLE, path=relative, area=area
            )
            Sample.objects.filter(pk=sample.pk).update(has_mask=True)
            written += 1
    return written
