"""Region proposers: `build_proposer(method, **params)` from a plain table of proposer classes.

Every proposer has `propose(image_uint8_rgb) -> (boxes float32 [N,4] xyxy, scores float32 [N])`,
boxes clipped to the image and sorted by rank, and `params() -> dict` (recorded in cache hashes).
Classes are imported only when chosen, so asking for Selective Search never imports the CNNs.
"""
from __future__ import annotations

import importlib
import inspect

from detect.config import closest_hint
from detect.errors import UserError

# method name -> "module:Class"; the class's __init__ keywords are the method's parameters.
PROPOSERS: dict[str, str] = {
    "selective_search": "detect.proposals.selective_search:SelectiveSearch",
    "selectivesearch": "detect.proposals.selectivesearch_backend:SelectiveSearchPackage",
    "multibox": "detect.proposals.multibox:MultiBoxProposer",
    "combined": "detect.proposals.combined:CombinedProposer",
}


def proposer_class(method: str) -> type:
    if method not in PROPOSERS:
        raise UserError(f"unknown proposal method {method!r}{closest_hint(method, PROPOSERS)} "
                        f"(methods: {', '.join(PROPOSERS)})")
    module_name, _, class_name = PROPOSERS[method].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_proposer(method: str, **params):
    """A proposer by name; an unknown method or parameter is an error naming the closest valid one."""
    cls = proposer_class(method)
    valid = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    for key in params:
        if key not in valid:
            raise UserError(f"method {method!r} has no parameter {key!r}{closest_hint(key, valid)} "
                            f"(parameters: {', '.join(valid)})")
    return cls(**params)
