"""One rank of a round's data-parallel training: ``torchrun ... -m workers.ddp_train JOB.json``.

Started by ``rounds.phases.training`` inside a GPU worker's training task when ``train_processes`` > 1
(by default on nodes with several GPUs). Every rank sets up Django (reads the round's config, reports
progress from rank 0), joins the process group and runs ``rounds.phases.training.train_fit`` on its share
of each epoch; rank 0 writes ``result.json`` next to the model. See ``ml.training.distributed``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "forgery_site.settings")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun --nproc_per_node=N -m workers.ddp_train JOB.json", file=sys.stderr)
        return 2
    from ml.training.distributed import die_with_parent

    die_with_parent()  # torchrun gone (its worker killed): this rank stops too, no orphan training
    import django

    django.setup()
    from ml.training import distributed
    from rounds import selectors
    from rounds.phases.common import round_dir
    from rounds.phases.training import train_fit

    spec = json.loads(Path(argv[0]).read_text())
    context = distributed.init_from_env()
    try:
        round_ = selectors.round_get(round_id=int(spec["round_id"]))
        init = Path(spec["init_path"]) if spec["init_path"] else None
        info = train_fit(round_, spec["name"], spec["phase"], spec["rows"], spec["val_rows"],
                         set(spec["mask_ids"]), int(spec["epochs"]), init, {})  # fmt: skip
        if context.is_main:
            from catalog.storage import atomic_write_bytes

            out = round_dir(round_, spec["phase"], spec["name"]) / "result.json"
            atomic_write_bytes(out, json.dumps(info).encode())
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
