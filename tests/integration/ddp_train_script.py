"""Trains a tiny LAE with the shared trainer and saves its parameters; run as one process or under torchrun.

    python tests/integration/ddp_train_script.py OUT BATCH [EPOCHS]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/integration/ddp_train_script.py OUT BATCH

Used by ``test_distributed_training.py``: two ranks with BATCH b must end where one process with BATCH 2b
ends (same data order, averaged gradients), and both ranks must hold identical weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from ml.detectors import create  # noqa: E402
from ml.training import ResumableSampler, TrainConfig, Trainer, distributed, seed_everything  # noqa: E402

SIZE = 32


class Faces(Dataset):
    """Deterministic synthetic items in the batch contract: a bright square marks the fakes."""

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        k = index + self.offset
        generator = torch.Generator().manual_seed(k)
        image = torch.rand(3, SIZE, SIZE, generator=generator) * 2 - 1
        label = k % 2
        if label:
            image[:, 8:20, 8:20] += 0.8
        return {
            "image": image.clamp(-1, 1),
            "label": torch.tensor(label),
            "mask": torch.zeros(1, SIZE, SIZE),
            "has_mask": torch.tensor(False),
            "region_targets": torch.full((10,), -1),
            "sample_id": f"s{k}",
            "video_id": f"v{k}",
        }


def main(out: Path, batch: int, epochs: int = 2) -> None:
    distributed.die_with_parent()  # as workers.ddp_train does
    context = distributed.init_from_env()
    torch.set_num_threads(1)
    seed_everything(0)
    detector = create("lae", image_size=SIZE, depth=2, width=4, latent_channels=8, groups=2)
    train_loader = DataLoader(Faces(24), batch_size=batch, sampler=ResumableSampler(24, seed=3))
    val_loader = DataLoader(Faces(8, offset=100), batch_size=8, sampler=ResumableSampler(8, shuffle=False))
    config = TrainConfig(epochs=epochs, seed=0, device="cpu", progress=False, patience=max(10, epochs))
    result = Trainer(detector, train_loader, val_loader, config, out / "run").fit()
    state = {k: v.detach().clone() for k, v in detector.state_dict().items()}
    torch.save(state, out / f"rank{context.rank}.pt")
    (out / f"rank{context.rank}.json").write_text(
        json.dumps(
            {"world_size": context.world_size, "epochs_run": result.epochs_run, "steps": len(train_loader)}
        )
    )
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
