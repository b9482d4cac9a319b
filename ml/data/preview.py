"""Contact sheet of a dataset: fakes with their masks next to real samples, for a quick look.

Rows: real samples; fake samples (titled family:region/method); their masks. Written with
matplotlib's Agg backend so it works on a headless machine.
"""

from __future__ import annotations

from pathlib import Path

from ml.data import images
from ml.data.manifest import read_manifest, resolve_in_root


def contact_sheet(dataset_dir: str | Path, out_png: str | Path, n: int = 12) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(dataset_dir)
    first: dict[str, dict] = {}
    for r in read_manifest(root):  # one frame per video
        first.setdefault(r["video"], r)
    rows = list(first.values())
    fakes = []
    seen: set[str] = set()
    for r in rows:  # one fake per family first, then fill up
        if r["label"] == "fake" and r["manipulation"] not in seen and len(fakes) < n:
            fakes.append(r)
            seen.add(r["manipulation"])
    fakes += [r for r in rows if r["label"] == "fake" and r not in fakes][: n - len(fakes)]
    reals = [r for r in rows if r["label"] == "real"][:n]
    cols = max(len(fakes), len(reals), 1)
    fig, axes = plt.subplots(3, cols, figsize=(1.6 * cols, 5.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")

    def show(ax, rel, title=None, grey=False):
        img = images.read(resolve_in_root(root, rel), grey=grey)
        ax.imshow(img, cmap="gray" if grey else None, vmin=0, vmax=255)
        if title:
            ax.set_title(title, fontsize=6)

    for k, r in enumerate(reals):
        show(axes[0, k], r["path"], "real" if k else "real samples")
    for k, r in enumerate(fakes):
        p = r["params"]
        detail = p.get("region") or p.get("method") or p.get("blend")
        show(axes[1, k], r["path"], f"{r['manipulation']}:{detail}")
        show(axes[2, k], r["mask_path"], "mask", grey=True)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["contact_sheet"]
