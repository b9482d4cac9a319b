"""Command line of the data engine.

python -m ml.data generate --out DIR --count N --size S --seed K [--protocol NAME] [--workers W]
python -m ml.data shortcuts DIR [--protocol NAME]   (global-shortcut probe, ``ml.data.shortcuts``)
"""

from __future__ import annotations

import argparse
import json
import sys

from ml.data.protocols import PROTOCOL_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.data", description="Face-forgery data engine")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a procedural dataset (images, masks, manifest, protocols)")
    gen.add_argument("--out", required=True, help="output directory (must not hold a dataset yet)")
    gen.add_argument("--count", type=int, required=True, help="number of samples (frames)")
    gen.add_argument("--size", type=int, default=128, help="image size in pixels (64-256 typical)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--protocol", choices=PROTOCOL_NAMES, default=None, help="restrict families to one protocol"
    )
    gen.add_argument("--workers", type=int, default=1, help="worker processes")
    gen.add_argument("--frames-per-video", type=int, default=None)
    gen.add_argument("--real-photos", action="store_true", help="add forgeries of the packaged real photos")
    gen.add_argument(
        "--artefacts",
        default=None,
        help='fixed artefact parameters of every fake as JSON, e.g. \'{"match_noise": false, "jpeg_quality": 60}\'',
    )
    ing = sub.add_parser("ingest", help="face crops (+ forgeries) from a folder of photos and videos")
    ing.add_argument("--src", required=True, help="folder of images/videos (sub-folder = identity)")
    ing.add_argument("--out", required=True)
    ing.add_argument("--size", type=int, default=128)
    ing.add_argument("--seed", type=int, default=0)
    ing.add_argument("--frames-per-video", type=int, default=8)
    ing.add_argument("--no-forge", action="store_true", help="real crops only")
    prev = sub.add_parser("preview", help="contact sheet PNG of a dataset: real / fake / mask")
    prev.add_argument("dataset")
    prev.add_argument("--out", required=True, help="PNG file to write")
    prev.add_argument("--n", type=int, default=12)
    cut = sub.add_parser(
        "shortcuts", help="AUC of a logistic regression on whole-image statistics, per protocol"
    )
    cut.add_argument("dataset")
    cut.add_argument("--protocol", action="append", help="only this protocol (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "shortcuts":
        from ml.data.shortcuts import probe_dataset

        try:
            print(json.dumps(probe_dataset(args.dataset, args.protocol), indent=1, sort_keys=True))
        except (ValueError, FileNotFoundError) as exc:
            parser.error(str(exc))
        return 0
    if args.command == "generate":
        from ml.data.generate import generate_dataset

        try:
            out = generate_dataset(
                args.out,
                args.count,
                args.size,
                args.seed,
                protocol=args.protocol,
                workers=args.workers,
                frames_per_video=args.frames_per_video,
                progress=True,
                real_photos=args.real_photos,
                artefacts=json.loads(args.artefacts) if args.artefacts else None,
            )
        except (ValueError, FileExistsError) as exc:  # json.JSONDecodeError is a ValueError
            parser.error(str(exc))
        print((out / "report.json").read_text().strip())
        return 0
    if args.command == "ingest":
        from ml.data.ingest import ingest_media

        try:
            out = ingest_media(
                args.src,
                args.out,
                size=args.size,
                seed=args.seed,
                frames_per_video=args.frames_per_video,
                forge=not args.no_forge,
                progress=True,
            )
        except (ValueError, FileExistsError) as exc:
            parser.error(str(exc))
        print((out / "report.json").read_text().strip())
        return 0
    from ml.data.preview import contact_sheet

    print(contact_sheet(args.dataset, args.out, n=args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
