"""``manage.py demo_loop``: the whole active-learning loop for ``make demo``.

1. the demo dataset: generated with ``python -m ml.data generate`` under MEDIA_ROOT/datasets/NAME when
   missing, imported when the platform has no samples for it;
2. ``--rounds`` rounds (default 3), each launched through the round service and run by the Celery
   workers (``deploy/local/services.sh app-up``); progress (phase, epoch, loss, ETA) printed live;
3. while a round is annotating, the oracle annotator answers its Label Studio tasks through Label
   Studio's own API with the ground-truth masks; the masks come back by webhook/reconciliation exactly as
   with people (``--labeling none`` skips Label Studio and stores the oracle's masks directly; the report
   says so);
4. a table per round (AUC seen/unseen per detector, % of the training pool masked, phase seconds), a
   Markdown report with plots under ``var/demo/`` and an export bundle of the best detector;
5. the dashboard and Label Studio URLs with where their credentials are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

PHASES = ("training", "scoring", "selecting", "annotating", "retraining", "evaluating")


class Command(BaseCommand):
    help = "Run active-learning rounds end to end on the demo dataset and write a report under var/demo/."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", default="demo")
        parser.add_argument("--rounds", type=int, default=int(os.environ.get("DEMO_ROUNDS", 3)))
        parser.add_argument("--count", type=int, default=int(os.environ.get("DEMO_COUNT", 1200)),
                            help="samples to generate when the dataset is missing")  # fmt: skip
        parser.add_argument("--size", type=int, default=int(os.environ.get("DEMO_SIZE", 64)))
        parser.add_argument("--protocol", default=os.environ.get("DEMO_PROTOCOL", "cross_manipulation"))
        parser.add_argument("--epochs", type=int, default=int(os.environ.get("DEMO_EPOCHS", 6)))
        parser.add_argument(
            "--budget-total",
            type=float,
            default=float(os.environ.get("DEMO_BUDGET_TOTAL", 0.03)),
            help="share of the training data masked over the whole demo (LAE's < 3%%)",
        )
        parser.add_argument(
            "--budget",
            type=float,
            default=float(os.environ["DEMO_BUDGET"]) if os.environ.get("DEMO_BUDGET") else None,
            help="share per round (default: the total spread evenly over the rounds)",
        )
        parser.add_argument("--detectors", default=os.environ.get("DEMO_DETECTORS", "lae,sjedd"))
        parser.add_argument(
            "--labeling",
            choices=["auto", "label_studio", "none"],
            default=os.environ.get("DEMO_LABELING", "auto"),
            help="auto: through Label Studio when it answers and WEBHOOK_SECRET is set, else direct oracle masks",
        )
        parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per round")
        parser.add_argument("--out", default=str(Path(settings.BASE_DIR) / "var" / "demo"))

    # ------------------------------------------------------------------------------------------ steps
    def handle(self, *args, **opts) -> None:
        from django.contrib.auth.models import Group, User

        from catalog.models import Dataset

        out = Path(opts["out"])
        out.mkdir(parents=True, exist_ok=True)
        dataset = self._dataset(opts)
        admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True})
        admin.groups.add(Group.objects.get_or_create(name="admin")[0])
        if opts["labeling"] == "auto":
            problem = self._label_studio_problem()
            opts["labeling"] = "none" if problem else "label_studio"
            if problem:
                self.stdout.write(self.style.WARNING(
                    f"Label Studio path unavailable ({problem}); the oracle's masks are stored directly and the "
                    "report says so. Start Label Studio (deploy/labelstudio/ls.sh start) and give the web server "
                    "and workers WEBHOOK_SECRET to run the loop through it."))  # fmt: skip
        elif opts["labeling"] == "label_studio":
            problem = self._label_studio_problem()
            if problem:
                raise CommandError(f"{problem}. Start it with `deploy/labelstudio/ls.sh start` (and set "
                                   "WEBHOOK_SECRET), or run with --labeling none.")  # fmt: skip
        self._top_up_budget(dataset, opts)
        started = time.time()
        rounds = []
        for index in range(opts["rounds"]):
            self.stdout.write(self.style.MIGRATE_HEADING(f"\n=== Round {index + 1}/{opts['rounds']} ==="))
            round_ = self._run_round(Dataset.objects.get(pk=dataset.pk), admin, opts, opts["rounds"] - index)
            rounds.append(round_)
            self._print_table(rounds)
        total = time.time() - started
        exported = self._export_best(rounds)
        report = self._report(dataset, rounds, out, total, exported, opts)
        self.stdout.write(self.learning_verdict(rounds).replace("**", ""))
        self.stdout.write(self.style.SUCCESS(f"\nAll {len(rounds)} rounds done in {total / 60:.1f} min."))
        self.stdout.write(f"Report         {report}")
        self._print_urls()

    def _dataset(self, opts):
        from catalog.models import Dataset, Sample
        from catalog.services import dataset_get_or_create, import_job_create, import_job_run

        name = opts["dataset"]
        directory = Path(settings.MEDIA_ROOT) / "datasets" / name
        if not (directory / "manifest.jsonl").exists():
            self.stdout.write(f"Generating {opts['count']} samples at {opts['size']} px into {directory} ...")
            subprocess.run(
                [sys.executable, "-m", "ml.data", "generate", "--out", str(directory), "--count", str(opts["count"]),
                 "--size", str(opts["size"]), "--seed", "0", "--protocol", opts["protocol"]],
                check=True, cwd=settings.BASE_DIR,
            )  # fmt: skip
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None or not Sample.objects.filter(dataset=dataset).exists():
            dataset = dataset_get_or_create(name=name)
            job = import_job_create(
                dataset=dataset, source=f"datasets/{name}/manifest.jsonl", format="manifest"
            )
            job = import_job_run(job_id=job.pk)
            if job.status != "succeeded":
                raise CommandError(f"import failed: {job.message} {job.errors[:5]}")
            self.stdout.write(f"Imported {job.inserted_rows} samples into dataset {name!r}.")
        return dataset

    @staticmethod
    def _label_studio_problem() -> str | None:
        """Why the Label Studio path cannot run here (None when it can)."""
        from labeling.client import get_client

        if not settings.WEBHOOK_SECRET:
            return "WEBHOOK_SECRET is not set, so Label Studio's webhooks could not be authenticated"
        try:
            if get_client().healthy():
                return None
            reason = "its health check failed"
        except Exception as exc:  # reported, not raised
            reason = str(exc)
        return f"Label Studio is not reachable at {settings.LABEL_STUDIO_URL} ({reason})"

    def _top_up_budget(self, dataset, opts) -> None:
        """A repeated ``make demo`` finds the dataset's campaign budget spent by the earlier run: this run
        gets ``budget_total`` more of the training data on top of what is already masked (said, not
        hidden), so the loop runs again instead of every launch being refused."""
        from rounds.models import Round
        from rounds.pool import budget_status

        status = budget_status(round_=Round(dataset=dataset, config=self._config(opts)))
        if status["spent"] and status["training_pool"]:
            share = min(1.0, (status["spent"] + status["total"]) / status["training_pool"])
            self.stdout.write(self.style.WARNING(
                f"The dataset already has {status['spent']} masks from earlier runs; this run may add "
                f"{status['total']} more (budget_total raised to {share:.1%} for its rounds)."))  # fmt: skip
            opts["budget_total"] = share

    @staticmethod
    def _config(opts) -> dict:
        return {
            "detectors": [d.strip() for d in opts["detectors"].split(",") if d.strip()],
            "protocol": opts["protocol"],
            "epochs": opts["epochs"],
            "retrain_epochs": opts["epochs"],
            "budget_total": opts["budget_total"],
            "image_size": opts["size"],
            "labeling": opts["labeling"],
            "threads": max(1, (os.cpu_count() or 2) // 2),
        }

    @staticmethod
    def round_budget(dataset, config: dict, rounds_left: int, share: float | None) -> dict:
        """This round's budget: ``share`` of the training data when given, else what remains of the
        campaign's total spread evenly (as a count) over the rounds left, so the demo ends at the total."""
        from rounds.models import Round
        from rounds.pool import budget_status

        if share is not None:
            return {"budget_fraction": share}
        status = budget_status(round_=Round(dataset=dataset, config=config))
        return {"budget_count": max(1, status["remaining"] // max(1, rounds_left))}

    def _run_round(self, dataset, admin, opts, rounds_left: int = 1):
        from rounds.launch import round_launch
        from rounds.models import Round
        from workers.enqueue import dispatch_round

        config = self._config(opts)
        config.update(self.round_budget(dataset, config, rounds_left, opts["budget"]))
        round_ = round_launch(dataset=dataset, config=config, user=admin)
        dispatch_round(round_.pk)
        deadline = time.time() + opts["timeout"]
        answered, last_line = False, ""
        while True:
            round_ = Round.objects.get(pk=round_.pk)
            line = self._status_line(round_)
            if line != last_line:
                self.stdout.write(line)
                last_line = line
            if round_.state in ("done", "failed", "cancelled"):
                break
            if round_.state == "annotating" and not answered:
                self._annotate(round_, opts)
                answered = True
            if time.time() > deadline:
                raise CommandError(
                    f"round {round_.number} did not finish within {opts['timeout']:.0f}s: {line}"
                )
            time.sleep(1.0)
        if round_.state != "done":
            raise CommandError(f"round {round_.number} ended {round_.state}: {round_.error[:2000]}")
        return round_

    def _status_line(self, round_) -> str:
        progress = round_.progress or {}
        line = f"  [{round_.state:<10}]"
        training = progress.get("training") or {}
        if round_.state in ("training", "retraining") and training.get("phase") == round_.state:
            eta = training.get("eta_s")
            line += (f" {training.get('detector')} epoch {training.get('epoch')}/{training.get('epochs')}"
                     f" step {training.get('step')}/{training.get('steps')} loss {training.get('loss')}"
                     f" ETA {'-' if eta is None else f'{eta:.0f}s'}")  # fmt: skip
        if round_.state == "annotating":
            status = progress.get("annotation") or {}
            line += f" masked {status.get('masked', 0)}/{status.get('selected', '?')}"
        return line

    def _annotate(self, round_, opts) -> None:
        if opts["labeling"] == "label_studio":
            from labeling.oracle import oracle_answer

            counts = oracle_answer(round_id=round_.pk)
            self.stdout.write(f"  oracle annotator answered through Label Studio: {json.dumps(counts)}")
        else:
            from rounds.demo_oracle import store_ground_truth_masks

            self.stdout.write(
                f"  oracle masks stored directly (no Label Studio): {store_ground_truth_masks(round_.pk)}"
            )

    # ----------------------------------------------------------------------------------------- output
    def _rows(self, rounds):
        # Video AUC columns when the test samples come from videos (round evaluation reports it then).
        videos = any(
            (m.get(split) or {}).get("video_auc") is not None
            for r in rounds
            for m in ((r.progress or {}).get("metrics") or {}).values()
            if isinstance(m, dict)
            for split in ("seen", "unseen")
        )
        rows = []
        for round_ in rounds:
            progress = round_.progress or {}
            metrics = progress.get("metrics") or {}
            row = {"round": round_.number, "masked_%": 100 * (progress.get("masked_fraction") or 0)}
            for name in round_.config["detectors"]:
                m = metrics.get(name) or {}
                row[f"{name}_auc_seen"] = (m.get("seen") or {}).get("auc")
                row[f"{name}_auc_unseen"] = (m.get("unseen") or {}).get("auc")
                if videos:
                    row[f"{name}_video_auc_seen"] = (m.get("seen") or {}).get("video_auc")
                    row[f"{name}_video_auc_unseen"] = (m.get("unseen") or {}).get("video_auc")
            for phase in PHASES:
                row[f"{phase}_s"] = ((progress.get("phases") or {}).get(phase) or {}).get("seconds")
            rows.append(row)
        return rows

    @staticmethod
    def learning_verdict(rounds, goal: float = 0.8) -> str:
        """Which detector learned most by the last round: seen AUC ± SE, distance from chance, spread."""
        last = rounds[-1]
        metrics = (last.progress or {}).get("metrics") or {}
        best = None
        for name in last.config["detectors"]:
            seen = (metrics.get(name) or {}).get("seen") or {}
            if seen.get("auc") is not None and (best is None or seen["auc"] > best[1]["auc"]):
                best = (name, seen)
        if best is None:
            return "No detector was evaluated in the last round."
        name, seen = best
        details = []
        if seen.get("auc_se"):
            details.append(f"{(seen['auc'] - 0.5) / seen['auc_se']:.1f} standard errors above chance")
        if seen.get("prob_std") is not None:
            details.append(f"P(fake) std {seen['prob_std']:.3f}")
        se = f" ± {seen['auc_se']:.3f}" if seen.get("auc_se") else ""
        verdict = "meets" if seen["auc"] >= goal else "is below"
        return (
            f"Best detector in round {last.number}: **{name}**, seen AUC {seen['auc']:.3f}{se}"
            f" ({'; '.join(details) or 'no standard error'}): {verdict} the {goal} goal."
        )

    @staticmethod
    def _fmt(value) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    def _print_table(self, rounds) -> None:
        rows = self._rows(rounds)
        keys = list(rows[0])
        self.stdout.write("  " + " | ".join(keys))
        for row in rows:
            self.stdout.write("  " + " | ".join(self._fmt(row[k]).rjust(len(k)) for k in keys))

    def _export_best(self, rounds):
        from modelhub.models import DetectorVersion

        last = rounds[-1]
        versions = list(DetectorVersion.objects.filter(round=last))
        if not versions:
            return None

        def score(version):
            unseen = (version.metrics.get("unseen") or {}).get("auc")
            seen = (version.metrics.get("seen") or {}).get("auc")
            return unseen if unseen is not None else (seen if seen is not None else -1)

        best = max(versions, key=score)
        try:
            from modelhub.services import detector_export
        except ImportError:
            return {"tag": best.tag, "bundle": None, "note": "export code not installed"}
        try:
            result = detector_export(version=best)
        except Exception as exc:  # the loop's results stand without the bundle
            self.stdout.write(self.style.WARNING(f"export of {best.tag} failed: {exc}"))
            return {"tag": best.tag, "bundle": None, "note": f"export failed: {exc}"}
        # The verdict line ranks by seen AUC (did it learn?); the export by unseen AUC (what a deployed
        # detector faces), so the two can name different detectors: say which criterion chose this one.
        unseen = (best.metrics.get("unseen") or {}).get("auc")
        criterion = f"best unseen AUC, {unseen:.3f}" if unseen is not None else "best seen AUC"
        self.stdout.write(f"Exported {best.tag} ({criterion}) -> MEDIA_ROOT/{result['bundle']}")
        return result

    def _report(self, dataset, rounds, out: Path, total: float, exported, opts) -> Path:
        from rounds.apis import efficiency_png
        from rounds.selectors import efficiency_curve

        points = efficiency_curve(dataset_id=dataset.pk)
        (out / "efficiency.png").write_bytes(efficiency_png(points, f"{dataset.name}: test AUC vs masks"))
        self._phase_plot(rounds, out / "phases.png")
        rows = self._rows(rounds)
        keys = list(rows[0])
        lines = [
            f"# Active-learning demo: dataset `{dataset.name}`",
            "",
            f"{len(rounds)} rounds in {total / 60:.1f} min; protocol `{opts['protocol']}`; detectors "
            f"{opts['detectors']}; masks for at most {opts['budget_total']:.1%} of the "
            f"training data in total (spread over the rounds); {opts['epochs']} "
            f"epochs per training; annotation: "
            + (
                "oracle through Label Studio (API → webhook → Mask rows)"
                if opts["labeling"] == "label_studio"
                else "oracle masks stored directly (Label Studio not used)"
            ),  # fmt: skip
            "",
            "| " + " | ".join(keys) + " |",
            "|" + "---|" * len(keys),
            *["| " + " | ".join(self._fmt(r[k]) for k in keys) + " |" for r in rows],
            "",
            "AUC on the protocol's test splits (seen manipulations / unseen ones; `video_auc`: per video, the "
            "mean P(fake) of its frames, shown when the samples come from videos); `masked_%` is the share of "
            "the training split with a collected mask after the round; phase times in seconds (annotating "
            "includes the oracle's answers and the webhook round trip).",
            "",
            self.learning_verdict(rounds),
            "",
            "![efficiency](efficiency.png)",
            "",
            "![phases](phases.png)",
            "",
            f"Exported detector: {json.dumps(exported) if exported else 'none'}",
            "",
            "Models are small and randomly initialised, trained for a few epochs on procedural faces: the "
            "numbers show the loop working at demo scale; `python -m bench learning` measures detector quality.",
        ]
        report = out / "report.md"
        report.write_text("\n".join(lines) + "\n")
        (out / "rounds.json").write_text(
            json.dumps(
                [{"round": r.number, "progress": r.progress, "config": r.config} for r in rounds], indent=1
            )
        )
        return report

    @staticmethod
    def _phase_plot(rounds, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        bottom = [0.0] * len(rounds)
        for phase in PHASES:
            values = [
                ((r.progress.get("phases") or {}).get(phase) or {}).get("seconds") or 0.0 for r in rounds
            ]
            ax.bar([r.number for r in rounds], values, bottom=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xlabel("round")
        ax.set_ylabel("seconds")
        ax.set_title("time per phase")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def _print_urls(self) -> None:
        host, port = os.environ.get("WEB_HOST", "127.0.0.1"), os.environ.get("WEB_PORT", "8000")
        ls_home = Path(os.environ.get("LS_HOME", Path(settings.BASE_DIR) / "var" / "labelstudio"))
        self.stdout.write(f"Dashboard      http://{host}:{port}/   (admin; password in var/demo/credentials)")
        ls_password = ls_home / "admin_password"
        self.stdout.write(
            f"Label Studio   {settings.LABEL_STUDIO_URL}   ({os.environ.get('LS_ADMIN_EMAIL', 'admin@forgerylab.local')}"
            f" / {ls_password.read_text().strip() if ls_password.exists() else 'see ' + str(ls_password)})"
        )
