"""open_clip towers for SJEDD and its same-backbone binary baseline: creation, weights, tokenisation.

``create_towers(model, pretrained, image_size)`` is the only place that calls
``open_clip.create_model`` (the one way into open_clip, see STYLE). ``pretrained`` is one of

* ``None``: random initialisation (tests, and every run on a machine without CLIP weights);
* a path to a local weights file (``.pt``/``.bin``/``.safetensors``, an open_clip/OpenAI checkpoint):
  loaded strictly by open_clip with ``weights_only=True`` (no pickle of objects);
* an open_clip pretrained tag such as ``"openai"`` or ``"laion2b_s34b_b79k"``: resolved through
  open_clip's hub cache, which works where the user has the weights cached or the hub is reachable.

A value that looks like a path (has a path separator or a weights-file suffix) and does not exist is a
``FileNotFoundError``; an unknown tag, or a tag whose weights cannot be fetched (``HF_HUB_OFFLINE=1`` with
an empty cache), is a ``PretrainedWeightsError``. There is never a silent fall-back to random weights.

Model configs are data: besides open_clip's built-ins (``ViT-B-32`` and ``ViT-B-16`` for real runs,
224 px) this package registers the JSON configs in ``model_configs/``: ``sjedd-tiny-vit`` (32 px,
patch 8, 2 layers, width 64, 64-d joint space: tests) and ``sjedd-small-vit`` (64 px, 4 layers, width
128) and ``sjedd-small-rn`` (64 px, open_clip's convolutional ``ModifiedResNet`` with one bottleneck per
stage, width 16, 64-d joint space: the CPU experiments' default, because a random-initialised ViT does
not learn from a few thousand 64 px images on CPU while this conv tower does, see the README). ``image_size`` overrides the config's input size (open_clip's
``force_image_size``, which resizes the positional-embedding grid for random init only).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_registered = False


class PretrainedWeightsError(RuntimeError):
    """The requested CLIP weights could not be found or loaded (never replaced by a random init)."""


def register_configs() -> None:
    """Make the JSON configs in ``model_configs/`` known to open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    _registered = True


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(WEIGHT_SUFFIXES)


def is_openai_checkpoint(path: Path) -> bool:
    """OpenAI's released CLIP weights are TorchScript archives (a zip with ``code/`` and
    ``constants.pkl``); open_clip's own checkpoints are plain state dicts."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def tower_info(model: str) -> dict:
    """What a registry needs to know of an open_clip model without building it: input size, QuickGELU."""
    import open_clip

    register_configs()
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"unknown open_clip model {model!r}")
    size = config["vision_cfg"]["image_size"]
    return {"image_size": int(size[0] if isinstance(size, list | tuple) else size),
            "quick_gelu": bool(config.get("quick_gelu", False))}  # fmt: skip


def check_pretrained(model: str, pretrained: str) -> None:
    """Fail now, with the reason, where ``create_towers(model, pretrained)`` would fail later: an unknown
    model, a missing file, an OpenAI checkpoint into a GELU config, or a tag whose weights are neither a
    file nor in the offline cache. Loads no weights (a launch check)."""
    import open_clip

    register_configs()
    if open_clip.get_model_config(model) is None:
        raise ValueError(f"unknown open_clip model {model!r}")
    if _looks_like_path(str(pretrained)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights file not found: {path}")
        if is_openai_checkpoint(path) and not tower_info(model)["quick_gelu"]:
            raise PretrainedWeightsError(
                f"{path.name} is an OpenAI CLIP checkpoint (QuickGELU) but {model!r} builds GELU: "
                f"use {model + '-quickgelu'!r}"
            )
        return
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise PretrainedWeightsError(
            f"{pretrained!r} is neither a weights file nor a pretrained tag of {model!r} (tags: {', '.join(tags) or 'none'})"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:  # resolves from the local cache only when the hub is offline: downloads nothing here
        open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg(model, pretrained))
    except Exception as exc:  # any resolution failure means: not available offline
        raise PretrainedWeightsError(
            f"the {pretrained!r} weights of {model} are not in the offline cache ({type(exc).__name__}); "
            "register a weights file instead (manage.py weights_add)"
        ) from exc


def create_towers(model: str, pretrained: str | None, image_size: int | None = None) -> nn.Module:
    """Return an open_clip ``CLIP`` module (``.visual`` image tower, text tower, ``encode_text``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub unless the user enabled it
    import open_clip

    register_configs()
    if open_clip.get_model_config(model) is None:
        raise ValueError(
            f"unknown open_clip model {model!r}; available: {', '.join(open_clip.list_models())}"
        )
    kwargs: dict = {}
    if pretrained:
        pretrained = str(pretrained)
        if _looks_like_path(pretrained):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"CLIP weights file not found: {path}")
            if is_openai_checkpoint(path) and not open_clip.get_model_config(model).get("quick_gelu"):
                raise PretrainedWeightsError(
                    f"{path.name} is an OpenAI CLIP checkpoint, trained with QuickGELU; {model!r} builds "
                    f"GELU, which would silently change every activation: use {model + '-quickgelu'!r}"
                )
            pretrained = str(path)
        elif pretrained not in open_clip.list_pretrained_tags_by_model(model):
            raise PretrainedWeightsError(
                f"{pretrained!r} is neither an existing weights file nor a pretrained tag of {model!r} "
                f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'})"
            )
    if image_size is not None and image_size != open_clip.get_model_config(model)["vision_cfg"]["image_size"]:
        if pretrained:
            raise ValueError(
                "image_size differs from the pretrained model's; resize inputs instead of the weights"
            )
        kwargs["force_image_size"] = int(image_size)
    try:
        clip = open_clip.create_model(model, pretrained=pretrained or None, weights_only=True, **kwargs)
    except (RuntimeError, OSError) as exc:
        if pretrained:
            raise PretrainedWeightsError(
                f"could not load CLIP weights {pretrained!r} for {model}: {exc}"
            ) from exc
        raise
    return clip


def tokenize(model: str, prompts: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Token ids (len(prompts), context_length) with the model's own tokenizer (bundled BPE, no network)."""
    import open_clip

    register_configs()
    return open_clip.get_tokenizer(model)(list(prompts))


def tower_image_size(clip: nn.Module) -> int:
    size = getattr(clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def image_tokens(visual: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled projected embedding (B,D) and projected spatial tokens (B,N,D) of the image tower.

    ViT towers: patch tokens go through the same ``ln_post`` and projection as the class token
    (MaskCLIP-style dense features, Zhou et al. ECCV 2022), so they live in the joint space and can be
    compared with the text embeddings. Convolutional (``ModifiedResNet``) towers: the final feature map
    goes through the attention pool's value and output projections only (MaskCLIP's ResNet recipe: the
    attention's mixing is dropped, the per-position value is kept), with the pool's positional embedding
    added as it is for the pooled query [ours]; at 64 px that is a 2x2 grid. Other towers return ``None``.
    """
    if hasattr(visual, "attnpool") and hasattr(visual, "stem"):
        return _resnet_tokens(visual, image)
    if not hasattr(visual, "output_tokens"):
        return visual(image), None
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, tokens = visual(image)
    finally:
        visual.output_tokens = previous
    if getattr(visual, "proj", None) is not None:
        tokens = tokens @ visual.proj
    return pooled, tokens


def _resnet_tokens(visual: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass through an open_clip ``ModifiedResNet``: the pooled embedding and the value-path tokens."""
    x = visual.stem(image.to(visual.conv1.weight.dtype))
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    pool = visual.attnpool
    pooled = pool(x)
    flat = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    flat = flat + pool.positional_embedding[1:].to(flat.dtype)
    return pooled, pool.c_proj(pool.v_proj(flat))
