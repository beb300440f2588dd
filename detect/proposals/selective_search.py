"""Selective Search (Uijlings et al., IJCV 2013): our own, vectorised implementation.

Per strategy: Felzenszwalb segmentation (graph_segmentation.py; skimage's felzenszwalb, label for
label) of the image in one colour space with threshold k, then greedy hierarchical grouping of
neighbouring regions by the sum of the chosen similarities (C colour, T texture, S size, F fill).
Every region of every hierarchy is a proposal; the paper's ranking (hierarchy position x a seeded
random factor, pooled over strategies, duplicates dropped) orders them.

Why it is fast: colour and texture bins are quantised once per colour space (texture keeps only
its ~20% of entries outside the zero bins), region histograms are one np.bincount over (label, bin)
pairs, adjacency comes from label shifts, and the grouping keeps a heap with lazy invalidation,
computing a new region's similarity to all its neighbours in one numpy expression. Both similarity
sets of a (colour space, k) share one segmentation, and the k values of a colour space share its
smoothed image, edge costs and their sort order (the part of Felzenszwalb's algorithm that does
not depend on k); only the union-find passes run per k. Per stage, CPU s per 640x480 BCCD test image
in `fast` mode (3 images, 2026-12-03, a 2-core machine at load average ~10): edge graphs 0.43 (two;
mostly np.argsort of 1.2M costs), union-find passes 0.37 (four), colour conversion and colour/texture
bins 0.11, initial regions 0.06, grouping 0.19 (eight); skimage's felzenszwalb took 3.12 for the same
four segmentations. `scale_k` with a small `max_side` still trades resolution for speed.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from detect.errors import UserError
from detect.proposals.graph_segmentation import EdgeGraph
from detect.proposals.boxes import (
    as_rgb_image, dedupe_boxes_keep_first, downscale_to_max_side, filter_small_boxes, map_back, rank_scores,
)

COLOUR_BINS = 25
TEXTURE_BINS = 10
COLOUR_SPACES = ("RGB", "HSV", "Lab", "rgI", "H", "I")
SIMILARITY_TERMS = "CTSF"
MAX_PIXELS = 40_000_000  # segmenting more than this at full size takes minutes and gigabytes: ask for max_side

# The paper's presets (section 5.2 / R-CNN's "fast" mode). `single` is the paper's best single strategy.
STRATEGIES: dict[str, dict] = {
    "single": {"color_spaces": ["HSV"], "ks": [100], "similarities": ["CTSF"]},
    "fast": {"color_spaces": ["HSV", "Lab"], "ks": [50, 100], "similarities": ["CTSF", "TSF"]},
    "quality": {"color_spaces": ["HSV", "Lab", "rgI", "H", "I"], "ks": [50, 100, 150, 300],
                "similarities": ["CTSF", "TSF", "F", "S"]},
}


def convert_colour_space(image: np.ndarray, space: str) -> np.ndarray:
    """uint8 RGB [H,W,3] -> float32 [H,W,C] with every channel in [0,1] (C = 1 for H and I)."""
    if space == "RGB":
        out = image
    elif space == "HSV":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)  # hue over the full 0..255 range
    elif space == "Lab":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    elif space == "H":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)[:, :, :1]
    elif space == "I":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif space == "rgI":
        rgb = image.astype(np.float32)
        total = rgb.sum(axis=2, keepdims=True)
        rg = rgb[:, :, :2] / np.maximum(total, 1.0)
        return np.concatenate([rg, total / (3 * 255.0)], axis=2).astype(np.float32)
    else:
        raise UserError(f"unknown colour space {space!r}; choose from {', '.join(COLOUR_SPACES)}")
    return out.astype(np.float32) / 255.0


def quantise(values: np.ndarray, bins: int) -> np.ndarray:
    """Values in [0,1] -> bin indices 0..bins-1 (1.0 falls in the last bin)."""
    return np.minimum((values * bins).astype(np.int32), bins - 1)


def gaussian_derivative_kernels(sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D Gaussian and its derivative (radius 4 sigma), as correlation kernels for cv2.sepFilter2D."""
    r = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1, dtype=np.float32)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    g /= g.sum()
    return g, (r / sigma**2) * g  # correlating with +r*g/sigma^2 equals convolving with dG/dx


@dataclass
class TextureEntries:
    """The texture histogram cells pixels add to, kept only outside the zero bins: int64 [M] each.

    Gaussian derivatives (sigma = 1) steered to 4 axes; their positive and negative halves are the
    8 orientations, each scaled by its maximum over the image and cut in 10 bins. A pixel is
    non-zero in at most one half of an axis, so one code per axis says which half and bin. Most
    responses (~80% on BCCD) fall in a zero bin; those bins are filled in from region sizes
    (`histograms`), so only the rest is stored and counted, once per segmentation.
    """

    pixels: np.ndarray  # flat pixel index of each entry
    codes: np.ndarray  # (2 * axis + half) * TEXTURE_BINS + bin, bin >= 1
    orientations: int  # 8 per channel

    @classmethod
    def from_image(cls, image: np.ndarray) -> "TextureEntries":
        smooth, derivative = gaussian_derivative_kernels(1.0)
        angles = np.arange(4) * np.pi / 4
        pixels, codes = [], []
        for c in range(image.shape[2]):
            channel = np.ascontiguousarray(image[:, :, c])
            gx = cv2.sepFilter2D(channel, cv2.CV_32F, derivative, smooth, borderType=cv2.BORDER_REFLECT).ravel()
            gy = cv2.sepFilter2D(channel, cv2.CV_32F, smooth, derivative, borderType=cv2.BORDER_REFLECT).ravel()
            for a, angle in enumerate(angles):
                # one axis at a time, so every pass stays in cache; float64, as np.cos makes it
                steered = np.cos(angle) * gx + np.sin(angle) * gy
                positive = steered > 0
                # dividing by +peak (positive half) or -peak (negative half) gives |response| / peak
                peak = np.where(positive, max(steered.max(), 1e-12), -max(-steered.min(), 1e-12))
                scaled = np.divide(steered, peak, out=peak)
                scaled *= TEXTURE_BINS
                kept = np.flatnonzero(scaled >= 1)  # bin >= 1
                bins = np.minimum(scaled[kept], TEXTURE_BINS - 1).astype(np.int64)  # the peak: last bin
                axis = 4 * c + a
                pixels.append(kept)
                codes.append(bins + np.where(positive[kept], 2 * axis * TEXTURE_BINS, (2 * axis + 1) * TEXTURE_BINS))
        return cls(np.concatenate(pixels), np.concatenate(codes), 8 * image.shape[2])

    def histograms(self, labels_flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """L1-normalised texture histograms [R, C*8*10] of the regions of a label image."""
        num, cells = len(sizes), self.orientations * TEXTURE_BINS
        counts = np.bincount(labels_flat[self.pixels] * cells + self.codes, minlength=num * cells)
        counts = counts.reshape(num, self.orientations, TEXTURE_BINS).astype(np.float64)
        counts[:, :, 0] = sizes[:, None] - counts[:, :, 1:].sum(axis=2)  # zero-bin and other-half pixels
        return (counts.reshape(num, -1) / (sizes[:, None] * self.orientations)).astype(np.float32)


@dataclass
class ColourSpaceImage:
    """What every strategy on one colour space shares: the image, its colour and texture bins."""

    image: np.ndarray  # float32 [H,W,C] in [0,1]
    colour_codes: np.ndarray  # int32 [C, H*W], bin index + channel offset
    texture: TextureEntries

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, space: str) -> "ColourSpaceImage":
        image = convert_colour_space(rgb, space)
        flat = image.reshape(-1, image.shape[2]).T
        colour = quantise(flat, COLOUR_BINS) + (np.arange(image.shape[2], dtype=np.int32) * COLOUR_BINS)[:, None]
        return cls(image, colour, TextureEntries.from_image(image))


def region_histograms(labels_flat: np.ndarray, codes: np.ndarray, num_regions: int, dims: int) -> np.ndarray:
    """L1-normalised histograms [R, dims] of per-pixel bin codes [K, P] for labels [P], one bincount."""
    index = (labels_flat * dims)[None, :] + codes
    counts = np.bincount(index.ravel(), minlength=num_regions * dims).reshape(num_regions, dims)
    return (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class InitialRegions:
    """The segmentation's regions: sizes [R], inclusive pixel boxes [R,4], histograms, adjacency pairs."""

    sizes: np.ndarray
    boxes: np.ndarray  # float64 [R,4] min_x, min_y, max_x, max_y (inclusive pixels)
    colour: np.ndarray
    texture: np.ndarray
    pairs: np.ndarray  # int64 [E,2], i < j

    @classmethod
    def from_labels(cls, labels: np.ndarray, space_image: ColourSpaceImage) -> "InitialRegions":
        num = int(labels.max()) + 1
        flat = labels.ravel()
        sizes = np.bincount(flat, minlength=num).astype(np.float64)
        slices = ndimage.find_objects(labels + 1)
        boxes = np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices], dtype=np.float64)
        channels = space_image.image.shape[2]
        colour = region_histograms(flat, space_image.colour_codes, num, channels * COLOUR_BINS)
        texture = space_image.texture.histograms(flat, sizes)
        return cls(sizes, boxes, colour, texture, adjacent_pairs(labels))


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique 4-connected neighbour pairs (i < j) of a label image, from horizontal/vertical shifts."""
    num = int(labels.max()) + 1
    keys = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        a, b = a[differ].astype(np.int64), b[differ].astype(np.int64)
        keys.append(np.minimum(a, b) * num + np.maximum(a, b))
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys // num, keys % num], axis=1)


def segment(space_image: ColourSpaceImage, k: float, sigma: float, graph: EdgeGraph | None = None) -> np.ndarray:
    """Felzenszwalb-Huttenlocher with min segment size = k, as the paper; labels 0..R-1 int64.

    skimage's felzenszwalb(image, scale=k, sigma, min_size=int(k)), label for label; pass the colour
    space's `EdgeGraph` (smoothing, edge costs, sort order) to share it across k values.
    """
    if graph is None:
        graph = EdgeGraph.from_image(space_image.image, sigma)
    return graph.segment(k, int(k))


def group(regions: InitialRegions, terms: str, image_area: float) -> np.ndarray:
    """Greedy hierarchical grouping until one region; boxes [2R-1, 4] in creation order (inclusive).

    Each step runs a handful of numpy calls on the new region's neighbours, so the per-call
    overhead is the cost: boxes are kept as corners (x1, y1, -x2, -y2), making a union box one
    np.minimum, and every sum is of whole pixel counts, exact in float64 in any order.
    """
    n0 = len(regions.sizes)
    cap = 2 * n0 - 1
    sizes = np.empty(cap)
    sizes[:n0] = regions.sizes
    corners = np.empty((cap, 4))
    corners[:n0, :2] = regions.boxes[:, :2]
    corners[:n0, 2:] = -regions.boxes[:, 2:]
    use_c, use_t, use_s, use_f = (t in terms for t in SIMILARITY_TERMS)
    # Colour and texture histograms side by side: each part sums to 1, so one intersection of the
    # joined histograms is the sum of the two, and a size-weighted average merges both at once.
    parts = [h for h, used in ((regions.colour, use_c), (regions.texture, use_t)) if used]
    hist = None
    if parts:
        hist = np.empty((cap, sum(p.shape[1] for p in parts)), np.float32)
        hist[:n0] = np.concatenate(parts, axis=1)

    def similarity(a, b: np.ndarray) -> np.ndarray:
        """Similarity of regions a (an index, or indices aligned with b) to regions b."""
        s = np.minimum(hist[b], hist[a]).sum(axis=1, dtype=np.float64) if hist is not None else np.zeros(len(b))
        both = sizes[b] + sizes[a]
        if use_s:
            s += 1.0 - both / image_area
        if use_f:
            union = np.minimum(corners[b], corners[a])
            box_area = (1.0 - union[:, 2] - union[:, 0]) * (1.0 - union[:, 3] - union[:, 1])
            s += 1.0 - (box_area - both) / image_area
        return s

    neighbours: list[set[int]] = [set() for _ in range(n0)]
    firsts, seconds = regions.pairs[:, 0].tolist(), regions.pairs[:, 1].tolist()
    for i, j in zip(firsts, seconds):
        neighbours[i].add(j)
        neighbours[j].add(i)
    heap = list(zip((-similarity(regions.pairs[:, 0], regions.pairs[:, 1])).tolist(), firsts, seconds))
    heapq.heapify(heap)

    alive = [True] * n0 + [False] * (cap - n0)
    pop, push = heapq.heappop, heapq.heappush
    t = n0
    while heap:
        _, i, j = pop(heap)
        if not (alive[i] and alive[j]):
            continue  # a stale entry: one side was merged already
        si, sj = sizes[i], sizes[j]
        sizes[t] = si + sj
        np.minimum(corners[i], corners[j], out=corners[t])
        if hist is not None:
            hist[t] = (si * hist[i] + sj * hist[j]) / (si + sj)
        alive[i] = alive[j] = False
        alive[t] = True
        gone = {i, j}
        merged = (neighbours[i] | neighbours[j]) - gone
        for n in merged:
            nb = neighbours[n]
            nb -= gone
            nb.add(t)
        neighbours.append(merged)
        if merged:
            others = list(merged)
            for s, n in zip((-similarity(t, np.array(others))).tolist(), others):
                push(heap, (s, n, t))
        t += 1
    boxes = corners[:t].copy()
    boxes[:, 2:] *= -1
    return boxes


class SelectiveSearch:
    """Selective Search proposer: `propose(image_uint8_rgb) -> (boxes [N,4] xyxy, scores [N])`.

    `strategy` picks the paper's preset (single, fast, quality); color_spaces / ks / similarities
    override its parts. Boxes narrower or lower than `min_box_size` pixels are dropped (R-CNN: 20);
    images whose longer side exceeds `max_side` are segmented downscaled and the boxes mapped back.
    `scale_k` also scales k (and so the minimum segment size) by that downscaling's pixel ratio, so
    segments keep their share of the image: a speed setting, e.g. `single` with max_side=256 on
    640x480 BCCD segments at k=16 (tools/bench_selective_search.py measures it against full size).
    Scores are 1 / (1 + rank value): the paper's ranking, higher is better.
    """

    method = "selective_search"

    def __init__(self, strategy: str = "fast", color_spaces: list[str] | None = None, ks: list[float] | None = None,
                 similarities: list[str] | None = None, sigma: float = 0.8, min_box_size: float = 20,
                 max_side: int | None = 1000, max_proposals: int | None = None, seed: int = 0,
                 scale_k: bool = False) -> None:
        if strategy not in STRATEGIES:
            raise UserError(f"unknown Selective Search strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        preset = STRATEGIES[strategy]
        self.strategy = strategy
        self.color_spaces = list(color_spaces or preset["color_spaces"])
        self.ks = [float(k) for k in (ks or preset["ks"])]
        self.similarities = [s.replace("+", "").upper() for s in (similarities or preset["similarities"])]
        for space in self.color_spaces:
            if space not in COLOUR_SPACES:
                raise UserError(f"unknown colour space {space!r}; choose from {', '.join(COLOUR_SPACES)}")
        for sim in self.similarities:
            if not sim or set(sim) - set(SIMILARITY_TERMS):
                raise UserError(f"bad similarity set {sim!r}: use letters from C, T, S, F (e.g. CTSF, TSF, F)")
        if any(k <= 0 for k in self.ks):
            raise UserError(f"Felzenszwalb k must be positive, got {self.ks}")
        if not isinstance(scale_k, bool):
            raise UserError(f"scale_k must be true or false, got {scale_k!r}")
        if max_side not in (None, 0) and max_side < 16:
            raise UserError(f"max_side must be at least 16 pixels (or 0 / None: never resize), got {max_side}")
        self.sigma = float(sigma)
        self.min_box_size = float(min_box_size)
        self.max_side = None if max_side in (None, 0) else int(max_side)
        self.max_proposals = None if max_proposals in (None, 0) else int(max_proposals)
        self.seed = int(seed)
        self.scale_k = scale_k

    def params(self) -> dict:
        return {
            "strategy": self.strategy, "color_spaces": self.color_spaces, "ks": self.ks,
            "similarities": self.similarities, "sigma": self.sigma, "min_box_size": self.min_box_size,
            "max_side": self.max_side, "max_proposals": self.max_proposals, "seed": self.seed,
            "texture": "gaussian-derivative sigma=1, 8 orientations, 10 bins", "colour_bins": COLOUR_BINS,
            # recorded only when on, so caches made before the option existed keep their names
            **({"scale_k": True} if self.scale_k else {}),
        }

    def hierarchies(self, image: np.ndarray, k_factor: float = 1.0) -> list[np.ndarray]:
        """One box array per strategy, each in creation order (inclusive pixel coordinates).

        The colour conversion, features and sorted edge graph are computed once per colour space,
        each segmentation once per (colour space, k) and grouped once per similarity set.
        """
        area = float(image.shape[0] * image.shape[1])
        out = []
        for space in self.color_spaces:
            space_image = ColourSpaceImage.from_rgb(image, space)
            graph = EdgeGraph.from_image(space_image.image, self.sigma)  # shared by every k
            for k in self.ks:
                labels = segment(space_image, k * k_factor, self.sigma, graph)
                regions = InitialRegions.from_labels(labels, space_image)
                out.extend(group(regions, terms, area) for terms in self.similarities)
        return out

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = as_rgb_image(image)
        height, width = image.shape[:2]
        if self.max_side is None and height * width > MAX_PIXELS:
            raise UserError(f"image of {width}x{height} pixels is too large to segment at full size; "
                            f"set max_side (e.g. 1000) to segment it downscaled")
        image = downscale_to_max_side(image, self.max_side)
        k_factor = image.shape[0] * image.shape[1] / (height * width) if self.scale_k else 1.0
        rng = np.random.default_rng(self.seed)
        all_boxes, all_values = [], []
        for boxes in self.hierarchies(image, k_factor):
            # the paper: the region created last has position 1; value = position x U[0,1]
            position = np.arange(len(boxes), 0, -1, dtype=np.float64)
            all_values.append(position * rng.random(len(boxes)))
            all_boxes.append(boxes)
        boxes = np.concatenate(all_boxes)
        values = np.concatenate(all_values)
        order = np.argsort(values, kind="stable")
        boxes, values = boxes[order], values[order]
        keep = dedupe_boxes_keep_first(boxes)
        boxes, values = boxes[keep], values[keep]
        boxes[:, 2:] += 1  # inclusive pixel extents -> continuous xyxy
        boxes = map_back(boxes, image.shape[:2], (height, width))
        keep = filter_small_boxes(boxes, self.min_box_size)
        boxes, values = boxes[keep], values[keep]
        if self.max_proposals is not None:
            boxes, values = boxes[: self.max_proposals], values[: self.max_proposals]
        return boxes.astype(np.float32), rank_scores(values)
