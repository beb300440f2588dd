"""Loading weights into a backbone: a local file, or torchvision's ImageNet weights.

Files are read with torch.load(weights_only=True) (never unpickle arbitrary objects) and loaded
strictly: a file that does not fit the architecture is an error naming the file and the first
offending keys, never a silently half-initialised model.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_weight

from backbones.errors import BackboneError

SHOWN_KEYS = 5


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state_dict, or the "model" entry of a checkpoint dict; a DDP "module." prefix is dropped."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad file; all mean "not a weights file"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackboneError(f"{path}: not a readable PyTorch weights file ({reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path}: expected a state_dict (name -> tensor) or a checkpoint dict with a "
                            f"'model' state_dict, found {type(obj).__name__}")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return obj


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """model.load_state_dict(state, strict=True), with an error that names `origin` and the bad keys.

    Keys under the model's `optional_checkpoint_prefixes` (e.g. GoogLeNet's training-only auxiliary
    heads when the model was built without them) are dropped first.
    """
    expected = model.state_dict()
    optional = tuple(getattr(model, "optional_checkpoint_prefixes", ()))
    state = {k: v for k, v in state.items() if k in expected or not (optional and k.startswith(optional))}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} in file vs {tuple(expected[k].shape)} in model"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:SHOWN_KEYS])}{', ...' if len(keys) > SHOWN_KEYS else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches", mismatched)) if keys]
    if problems:
        arch = getattr(model, "arch", type(model).__name__)
        raise BackboneError(f"{origin}: weights do not fit {arch}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_detection_weights(model: nn.Module, source: str | os.PathLike,
                           timeout: float = 30.0) -> tuple[str, list[str]]:
    """Weights for a detector's backbone: returns (the file used, the keys left out).

    What detection uses (`detection_parts()`: trunk, head, roi_head) must fit strictly. The rest, the
    ImageNet classifier and GoogLeNet's auxiliary heads, is loaded where it fits and left out where it
    does not, so a `detect pretrain` checkpoint of any class count starts a detector.
    """
    if str(source) == "torchvision":
        return load_weights(model, source, timeout), []
    state = read_state_dict(source)
    parts = model.detection_parts()
    used = {id(t) for part in (parts.trunk, parts.head, getattr(parts, "roi_head", None)) if part is not None
            for t in (*part.parameters(), *part.buffers())}
    current = model.state_dict(keep_vars=True)
    left_out = [k for k, v in current.items()
                if id(v) not in used and (k not in state or state[k].shape != v.shape)]
    state = {**state, **{k: current[k].detach() for k in left_out}}
    load_state_dict_strict(model, state, str(source))
    return str(source), left_out


def torchvision_state_dict(model: nn.Module, timeout: float = 30.0) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's weights for `model`'s architecture, from torch hub's cache or downloaded.

    Returns (state_dict, where it came from). Offline, fails after `timeout` seconds at most with a
    message that says how to pass a local file instead.
    """
    name = getattr(model, "torchvision_weights", None)
    arch = getattr(model, "arch", type(model).__name__)
    if name is None:
        raise BackboneError(f"torchvision has no weights for {arch}; pass a local weights file instead")
    weights = get_weight(name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True), str(cached)
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        reason = getattr(err, "reason", None) or err
        raise BackboneError(
            f"cannot fetch torchvision weights {name} for {arch} from {weights.url} ({reason}). Offline, "
            f"download that file on a machine with network access and pass it as a local file "
            f"(`--weights PATH`, or load_weights(model, PATH)), or place it at {cached}"
        ) from None
    except Exception as err:  # the download arrived but torch.load cannot read it
        raise BackboneError(f"{cached}: torchvision weights {name} are not readable ({type(err).__name__}: "
                            f"{str(err).strip()[:200]}); delete the file to download it again") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_weights(model: nn.Module, source: str | os.PathLike, timeout: float = 30.0) -> str:
    """Load "torchvision" (its ImageNet weights for this architecture) or a .pth path; returns the file used."""
    if str(source) == "torchvision":
        state, origin = torchvision_state_dict(model, timeout)
        load_state_dict_strict(model, state, origin)
        if hasattr(model, "adopt_torchvision_weights"):
            model.adopt_torchvision_weights()
        return origin
    load_state_dict_strict(model, read_state_dict(source), str(source))
    return str(source)
