"""Face inference: a full photo (or a ready crop) -> one result per face with P(fake), explanation, heatmap.

Photo mode follows the preprocessing contract of the bundles exactly: dlib's HOG detector finds the
faces (upsample 0, the photo padded by a quarter like ``ml.data.landmarks.detect_faces`` so a face
filling the frame is found, largest first), the 68 landmarks of each face give
the same 1.3-scale, eyes-level square crop the training data used (``crop_matrix``), and the crops go
through ``ml.export.standalone.preprocess``, the function the bundle's ``predict.py`` uses, so the platform
and a standalone user feed the model the same tensor.

The explanation map comes out at crop resolution. It is mapped back into the photo with the inverse of
the crop's similarity transform, so each face's heatmap has the photo's size and is zero outside that
face's crop square. Crop mode (the image already is a face crop) resizes to the model's size and the
map back to the image's size.

Detection score threshold (``MIN_FACE_SCORE`` = 0.5): the padding that rescues tight crops also lets
the HOG detector fire on the replicated border; on scikit-image's astronaut photo the real face scores
1.09 and a border false positive 0.27 (dlib's own threshold is 0). A user-facing API that returns one
result per face must not invent faces, so detections below 0.5 are dropped.

The draft mask is the heatmap thresholded at ``mask_threshold``: a starting
point for an annotator, not a segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ml.export.standalone import Predictor, preprocess
from ml.labels import NODES, describe

if TYPE_CHECKING:
    from ml.detectors import Detector

MAX_FACES = 8
MASK_THRESHOLD = 0.5
MIN_FACE_SCORE = 0.5


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the input image
    prob: float
    logit: float
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], the input image's size
    node_probs: dict[str, float] | None = None
    explanation: str | None = None
    crop_size: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def draft_mask(self, threshold: float = MASK_THRESHOLD) -> np.ndarray:
        return (self.heatmap >= threshold).astype(np.uint8) * 255


def find_faces(image: np.ndarray, min_score: float = MIN_FACE_SCORE) -> list[tuple[int, int, int, int]]:
    """Face boxes (left, top, right, bottom) scoring at least ``min_score``, largest first."""
    from ml.data import landmarks

    detector, _ = landmarks._dlib()  # the process-wide dlib models (loaded once)
    pad = max(image.shape[:2]) // 4
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    rects, scores, _ = detector.run(padded, 0, 0.0)
    boxes = [
        (r.left() - pad, r.top() - pad, r.right() - pad, r.bottom() - pad)
        for r, score in zip(rects, scores, strict=True)
        if score >= min_score
    ]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


class NoFaceFound(ValueError):
    """Photo mode found no face in the image."""


class FaceInference:
    """One model behind the face pipeline: an in-process ``Detector`` (eager PyTorch) or a verified bundle's
    ``Predictor`` (onnxruntime or TorchScript; the ONNX path needs no torch at all). Both get the same
    crops through the same ``preprocess``; the export check bounds their difference."""

    def __init__(
        self,
        detector: Detector | None = None,
        *,
        predictor: Predictor | None = None,
        max_faces: int = MAX_FACES,
    ):
        if (detector is None) == (predictor is None):
            raise ValueError("give exactly one of detector or predictor")
        self.detector = detector.eval() if detector is not None else None
        self.predictor = predictor
        self.pre = detector.preprocessing() if detector is not None else dict(predictor.preprocessing)
        self.backend = "torch" if detector is not None else predictor.backend
        self.size = int(self.pre["image_size"])
        self.max_faces = max_faces

    def score_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (B,S,S,3) crops -> prob, logit, explanation (B,S,S) and node_probs when available."""
        if self.predictor is not None:
            out = self.predictor.predict(crops)
            keys = ("prob", "logit", "explanation", "node_probs")
            return {k: np.asarray(out[k], np.float32) for k in keys if k in out}
        import torch

        x = torch.from_numpy(preprocess(crops, self.pre))
        with torch.no_grad():
            out = self.detector.predict(x)
        result = {
            "prob": out.prob.float().numpy(),
            "logit": out.logit.float().numpy(),
            "explanation": out.explanation.float().numpy(),
        }
        if out.node_probs is not None:
            result["node_probs"] = out.node_probs.float().numpy()
        return result

    def _faces(self, image: np.ndarray) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]:
        """(box, crop, crop matrix) per face; the crop is made exactly as the training data's crops are."""
        from ml.data.landmarks import crop_face, crop_matrix, predict_landmarks

        faces = []
        for box in find_faces(image)[: self.max_faces]:
            lm = predict_landmarks(image, box)
            crop, _ = crop_face(image, lm, self.size)
            faces.append((box, crop, crop_matrix(lm, self.size)))
        return faces

    def analyse(self, image: np.ndarray, mode: str = "photo") -> list[FaceResult]:
        """``image``: uint8 RGB (H,W,3). ``mode``: ``photo`` (detect + crop) or ``crop`` (already a face)."""
        image = np.ascontiguousarray(np.asarray(image)[..., :3])
        h, w = image.shape[:2]
        if mode == "crop":
            # ``preprocess`` resizes exactly as the bundle's predict.py does (the contract's "resize").
            scored = self.score_crops(image[None])
            heat = cv2.resize(scored["explanation"][0], (w, h), interpolation=cv2.INTER_LINEAR)
            return [self._result((0, 0, w, h), scored, 0, heat)]
        if mode != "photo":
            raise ValueError("mode must be 'photo' or 'crop'")
        faces = self._faces(image)
        if not faces:
            raise NoFaceFound("no face found in the image")
        scored = self.score_crops(np.stack([crop for _, crop, _ in faces]))
        results = []
        for index, (box, _, m) in enumerate(faces):
            heat = cv2.warpAffine(
                scored["explanation"][index],
                m,
                (w, h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,
            )
            results.append(self._result(tuple(int(v) for v in box), scored, index, heat))
        return results

    def _result(self, box, scored: dict[str, np.ndarray], index: int, heat: np.ndarray) -> FaceResult:
        nodes = None
        words = None
        if "node_probs" in scored:
            values = scored["node_probs"][index].astype(float).tolist()
            nodes = dict(zip(NODES, values, strict=True))
            words = describe(values)
        return FaceResult(
            box=box,
            prob=float(scored["prob"][index]),
            logit=float(scored["logit"][index]),
            heatmap=np.clip(heat, 0.0, 1.0).astype(np.float32),
            node_probs=nodes,
            explanation=words,
            crop_size=self.size,
        )


def png_bytes(array: np.ndarray) -> bytes:
    """A (H,W) map in [0,1] (or uint8) as an 8-bit greyscale PNG."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()
