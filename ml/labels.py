"""SJEDD's semantic label hierarchy: the 10 nodes, their edges and the 251 legal states.

This is the one place that knows the node order; the data engine writes 10-d targets in this order,
SJEDD turns logits into marginals over these states, and the platform stores the same vectors.

Node order follows the official SJEDD code (research note sjedd.md §1.1):
``[fake | expression, identity, physical | eye, eyebrow, lip, mouth, nose, skin]``.

Edges (sjedd.md §1.2, ``SO_Graph.graph_SA_ffso``):
  fake → expression, identity, physical;
  expression → lip, mouth;
  identity → all six local regions;
  physical → eye, lip, mouth, nose.
A binary vector is *legal* unless a global node is on while fake is off, a global node is on while all
of its children are off, or a local node is on while all of its parents are off. That leaves 251 states:
the all-zero "real" state and 250 fake states.

``UNKNOWN`` (-1) in a target vector means "not known for this sample" (e.g. a fake whose regions
nobody marked); losses skip such entries.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

NODES: tuple[str, ...] = (
    "fake",
    "expression",
    "identity",
    "physical",
    "eye",
    "eyebrow",
    "lip",
    "mouth",
    "nose",
    "skin",
)
NODE_INDEX = {name: i for i, name in enumerate(NODES)}
LEVELS: dict[str, tuple[int, ...]] = {"fake": (0,), "global": (1, 2, 3), "local": (4, 5, 6, 7, 8, 9)}
GLOBAL_NODES = ("expression", "identity", "physical")
LOCAL_NODES = ("eye", "eyebrow", "lip", "mouth", "nose", "skin")
UNKNOWN = -1

# Human-readable names for explanations ("identity altered: 0.93").
NODE_PHRASES = {
    "fake": "fake",
    "expression": "expression altered",
    "identity": "identity altered",
    "physical": "physical inconsistency",
    "eye": "eye",
    "eyebrow": "eyebrow",
    "lip": "lip",
    "mouth": "mouth",
    "nose": "nose",
    "skin": "skin",
}

# The prompts of the official code (sjedd.md §1.1). "physical inconsistency" is the node's prompt word.
PROMPTS: tuple[str, ...] = (
    "A photo of a fake face",
    "A photo of a face with the global attribute of expression altered",
    "A photo of a face with the global attribute of identity altered",
    "A photo of a face with the global attribute of physical inconsistency altered",
    *(f"A photo of a face with the local attribute of {c} altered" for c in LOCAL_NODES),
)

EDGES: dict[str, tuple[str, ...]] = {
    "fake": ("expression", "identity", "physical"),
    "expression": ("lip", "mouth"),
    "identity": ("eye", "eyebrow", "lip", "mouth", "nose", "skin"),
    "physical": ("eye", "lip", "mouth", "nose"),
}


def parents_of(node: str) -> tuple[str, ...]:
    return tuple(p for p, children in EDGES.items() if node in children)


def is_legal(state) -> bool:
    """True when the 0/1 vector ``state`` (length 10, node order) respects the hierarchy."""
    s = [int(v) for v in state]
    if len(s) != len(NODES) or any(v not in (0, 1) for v in s):
        return False
    for g in GLOBAL_NODES:
        gi = NODE_INDEX[g]
        if s[gi] and not s[0]:
            return False
        if s[gi] and not any(s[NODE_INDEX[c]] for c in EDGES[g]):
            return False
    for loc in LOCAL_NODES:
        if s[NODE_INDEX[loc]] and not any(s[NODE_INDEX[p]] for p in parents_of(loc)):
            return False
    return True


@lru_cache(maxsize=1)
def legal_states() -> np.ndarray:
    """The (251, 10) uint8 matrix of legal states, real state first, in lexicographic order."""
    rows = [s for s in itertools.product((0, 1), repeat=len(NODES)) if is_legal(s)]
    out = np.asarray(rows, dtype=np.uint8)
    out.setflags(write=False)
    return out


def targets_for(*, fake: bool, globals_on=(), locals_on=()) -> list[int]:
    """Build a 10-d target vector from node names; raises ValueError if the result is not legal."""
    vec = [0] * len(NODES)
    if fake:
        vec[0] = 1
    for name in (*globals_on, *locals_on):
        if name not in NODE_INDEX:
            raise ValueError(f"unknown node {name!r}")
        vec[NODE_INDEX[name]] = 1
    if not is_legal(vec):
        raise ValueError(f"illegal label state {vec}")
    return vec


def describe(probs, top: int = 4, threshold: float = 0.5) -> str:
    """Explanation in words from per-node probabilities: 'fake 0.97; identity altered 0.93, lip 0.88'."""
    p = [float(x) for x in probs]
    parts = [f"{NODE_PHRASES['fake']} {p[0]:.2f}"]
    rest = sorted(range(1, len(NODES)), key=lambda i: -p[i])
    picked = [i for i in rest if p[i] >= threshold][:top]
    if picked:
        parts.append(", ".join(f"{NODE_PHRASES[NODES[i]]} {p[i]:.2f}" for i in picked))
    return "; ".join(parts)


# ------------------------------------------------------------------------------ semantic targets by method
# What a public dataset's manipulation methods change, as SJEDD targets (research note sjedd.md §1.3).
# Two schemes, chosen per import (``semantic_targets``):
#   "released": the official code's training targets (``stack_label``): physical inconsistency is on for
#       every fake; identity swaps (Deepfakes, FaceSwap) light all six local regions, expression
#       re-enactment (Face2Face, NeuralTextures) lip and mouth. The default: it is what the published
#       model was trained on.
#   "paper": the hierarchy of the paper's Fig. 1 / the code's older ``label_map_ffso``: the same, without
#       physical inconsistency for the identity and expression classes.
#   "none": fakes get "fake, the rest unknown" (only annotator masks add regions).
# FaceShifter is an identity swap; Celeb-DF and DFDC fakes are identity swaps (face-swap methods).
SEMANTIC_SCHEMES = ("released", "paper", "none")
METHOD_CLASS = {
    "deepfakes": "identity",
    "faceswap": "identity",
    "faceshifter": "identity",
    "face2face": "expression",
    "neuraltextures": "expression",
}
DATASET_CLASS = {"celebdf": "identity", "dfdc": "identity"}
_CLASS_TARGETS = {
    ("identity", "released"): "1011111111",
    ("expression", "released"): "1101001100",
    ("identity", "paper"): "1010111111",
    ("expression", "paper"): "1100001100",
}


def method_targets(manipulation: str, dataset: str = "", scheme: str = "released") -> list[int]:
    """SJEDD targets of a fake made by ``manipulation`` (an FF++ method folder name, any case) in
    ``dataset`` ("ffpp", "celebdf", "dfdc", ...); unknown methods and ``scheme="none"``: fake only."""
    if scheme not in SEMANTIC_SCHEMES:
        raise ValueError(f"semantic targets scheme must be one of {SEMANTIC_SCHEMES}, got {scheme!r}")
    kind = METHOD_CLASS.get((manipulation or "").strip().lower()) or DATASET_CLASS.get(
        (dataset or "").lower()
    )
    if scheme == "none" or kind is None:
        return [1] + [UNKNOWN] * (len(NODES) - 1)
    vec = [int(c) for c in _CLASS_TARGETS[(kind, scheme)]]
    assert is_legal(vec), vec
    return vec


def refine_with_mask(known: list[int], from_mask: list[int]) -> list[int]:
    """Combine a fake's method targets with the targets an annotator's mask gives (its regions):
    the mask decides the local nodes, the method the global ones; a global node whose children the
    mask leaves all off becomes unknown rather than an illegal state."""
    out = list(from_mask)
    for g in GLOBAL_NODES:
        i = NODE_INDEX[g]
        if known[i] != UNKNOWN:
            out[i] = known[i]
    out[0] = 1
    for g in GLOBAL_NODES:
        i = NODE_INDEX[g]
        if out[i] == 1 and not any(out[NODE_INDEX[c]] == 1 for c in EDGES[g]):
            if any(out[NODE_INDEX[c]] == UNKNOWN for c in EDGES[g]):
                continue  # a child may be on: not contradictory
            out[i] = UNKNOWN
    return out
