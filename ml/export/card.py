"""The model card of an export bundle: Markdown with YAML front matter (machine-readable first, prose second).

The front matter is written by a small emitter (plain dicts, lists, strings, numbers, booleans, null;
strings JSON-quoted, which is valid YAML) so the card needs no YAML library to write and any YAML
library can read it. Metrics are given as ``{protocol: {split or round: {metric: value}}}`` by whoever
exports (the platform passes the DetectorVersion's metrics and its lineage); the card never invents a
number: a missing metric is shown as missing.

Licence notes are part of every card because a bundle used on real photos depends on dlib's 68-point
landmark model for its crops, whose terms are contradictory (see ``DLIB_LICENCE``).
"""

from __future__ import annotations

import json
from typing import Any

INTENDED_USE = (
    "Research and triage: scoring face crops for signs of manipulation (face swap, reenactment, "
    "inpainting, local-region edits) and showing where the evidence comes from. A score is evidence for a "
    "human reviewer, not a verdict."
)
OUT_OF_SCOPE = [
    "Automated decisions about people (moderation, legal or identity decisions) without human review.",
    "Images that are not frontal faces, or crops not made as the preprocessing contract says.",
    "Manipulation methods unlike those in the training data: scores do not transfer reliably.",
]
LIMITATIONS = [
    "Trained on the platform's procedural faces and forgeries unless the training data below says "
    "otherwise; accuracy on real-world deepfakes is unknown until measured on such data.",
    "Probabilities are not calibrated across datasets; choose thresholds on data like your own.",
    "The heatmap shows where the model's evidence lies, not a verified forgery mask.",
    "Face detection (dlib HOG) misses small, profile and occluded faces; a missed face gets no score.",
]
DLIB_LICENCE = (
    "Crops of full photos use dlib's HOG face detector (dlib: Boost Software License 1.0) and the "
    "68-point shape predictor `shape_predictor_68_face_landmarks.dat` as shipped by the "
    "`face_recognition_models` package. That model was trained on the iBUG 300-W dataset; the dlib-models "
    "README states that 300-W's licence excludes commercial use, so the model 'can't be used in a "
    "commercial product', while the LICENSE file packaged with face_recognition_models says CC0. The terms "
    "conflict: treat the landmark model as non-commercial unless you obtain rights to 300-W, or replace it "
    "with a landmark model you are licensed to use. The bundle itself does not contain the landmark model."
)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value))


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for plain data (the subset the card needs)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{_scalar(str(key))}:\n{to_yaml(item, indent + 2)}")
            else:
                empty = "{}" if isinstance(item, dict) else "[]" if isinstance(item, list) else _scalar(item)
                lines.append(f"{pad}{_scalar(str(key))}: {empty}\n")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}-\n{body}")
            else:
                lines.append(f"{pad}- {_scalar(item) if not isinstance(item, dict | list) else '[]'}\n")
    else:
        lines.append(pad + _scalar(value) + "\n")
    return "".join(lines)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for protocol, block in sorted(metrics.items()):
        if isinstance(block, dict):
            for part, values in sorted(block.items()):
                if isinstance(values, dict):
                    for name, number in sorted(values.items()):
                        rows.append((protocol, part, name, number))
                else:
                    rows.append((protocol, "", part, values))
        else:
            rows.append(("", "", protocol, block))
    if not rows:
        return "No metrics were recorded for this version.\n"
    out = ["| protocol | split / round | metric | value |", "|---|---|---|---|"]
    for protocol, part, name, number in rows:
        shown = f"{number:.4f}" if isinstance(number, float) else str(number)
        out.append(f"| {protocol} | {part} | {name} | {shown} |")
    return "\n".join(out) + "\n"


def model_card(
    *,
    kind: str,
    config: dict[str, Any],
    preprocessing: dict[str, Any],
    verification: dict[str, Any],
    metadata: dict[str, Any],
) -> str:
    """Markdown text of the card. ``metadata`` may carry tag, metrics, training, lineage, round, notes."""
    tag = str(metadata.get("tag") or f"{kind}-export")
    training = metadata.get("training") or {}
    front = {
        "model_name": tag,
        "detector": kind,
        "format": "forgerylab-bundle/1",
        "intended_use": INTENDED_USE,
        "out_of_scope": OUT_OF_SCOPE,
        "training_data": training.get("data") or "not recorded",
        "training_protocol": training.get("protocol") or "not recorded",
        "training": {k: v for k, v in training.items() if k not in ("data", "protocol")},
        "metrics": metadata.get("metrics") or {},
        "metrics_per_round": metadata.get("metrics_per_round") or {},
        "lineage": metadata.get("lineage") or {},
        "preprocessing": preprocessing,
        "verification": verification,
        "pretrained_source": config.get("pretrained_source"),
        "limitations": LIMITATIONS,
        "licences": {
            "bundle": "Apache-2.0 (code); weights inherit the terms of their training data",
            "dlib_68_point_landmarks": DLIB_LICENCE,
        },
    }
    per_round = metadata.get("metrics_per_round") or {}
    sections = [
        "---\n" + to_yaml(front) + "---\n",
        f"# Model card: {tag}\n",
        f"Detector `{kind}` exported with its image side as TorchScript and ONNX.\n",
        "## Intended use\n",
        INTENDED_USE + "\n\nOut of scope:\n" + "".join(f"- {item}\n" for item in OUT_OF_SCOPE),
        "## Training data and protocol\n",
        f"- data: {front['training_data']}\n- protocol: {front['training_protocol']}\n",
        "## Metrics per protocol\n",
        _metrics_table(front["metrics"]),
        "## Metrics per round\n",
        _metrics_table(per_round) if per_round else "No earlier rounds recorded.\n",
        "## Export check\n",
        f"ONNX (onnxruntime) against the in-process model: max absolute difference "
        f"{verification.get('onnx_max_abs_diff')}; TorchScript: {verification.get('torchscript_max_abs_diff')} "
        f"(on {verification.get('samples')} random inputs).\n",
        "## Preprocessing\n",
        "```json\n" + json.dumps(preprocessing, indent=2) + "\n```\n",
        "## Limitations\n",
        "".join(f"- {item}\n" for item in LIMITATIONS),
        "## Licence notes\n",
        DLIB_LICENCE + "\n",
    ]
    return "\n".join(sections)
