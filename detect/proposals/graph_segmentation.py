"""Felzenszwalb-Huttenlocher graph segmentation that shares its sorted edge graph across k values.

skimage's `felzenszwalb` smooths the image, builds the 8-connected edge graph, sorts its edges
(np.argsort of ~1.2M float64 costs for 640x480) and then runs two union-find passes, all inside one
call: every k pays for all of it again. Only the merge threshold depends on k, so here the smoothed
image, the edge costs and their sort order are computed once (`EdgeGraph.from_image`) and each k runs
only the union-find passes (`EdgeGraph.segment`), in a small numba kernel.

The result is skimage's, label for label (tests/test_graph_segmentation.py checks it on BCCD
images): the same float64 smoothing (scipy.ndimage.gaussian_filter, reflect, truncate 4, as
skimage.filters.gaussian calls it), the same cost expression and edge order fed to the same
np.argsort (so ties fall the same way), the same float32 rounding of the threshold
Int(C) + k/|C| that skimage's Cython makes, and roots kept at a segment's smallest pixel index, so
that labels are numbered in raster order of segments' first pixels as skimage's np.unique numbers
them. Two things are cheaper without changing the result: the minimum-size pass visits only the edges
the first pass rejected (an edge inside one component at its turn stays inside it, and merged edges
are inside one afterwards), and edge endpoints are computed from the edge index instead of being
gathered into a sorted [E, 2] array.

Why numba: the passes are sequential (each decision depends on the components so far) and skimage
does not expose its loop; in numpy they would be a Python loop over a million edges.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage
from skimage.util import img_as_float64


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, x: int) -> int:
    """Root of x, halving the path on the way (roots are a set's smallest index: parent[x] <= x)."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _endpoints(e: int, height: int, width: int) -> tuple[int, int]:
    """Pixel indices of edge e in skimage's layout: right, down, down-right, up-right blocks."""
    n_right = height * (width - 1)
    if e < n_right:
        y, x = divmod(e, width - 1)
        p = y * width + x
        return p, p + 1
    e -= n_right
    n_down = (height - 1) * width
    if e < n_down:
        return e, e + width
    e -= n_down
    n_diag = (height - 1) * (width - 1)
    if e < n_diag:
        y, x = divmod(e, width - 1)
        p = y * width + x
        return p, p + width + 1
    e -= n_diag
    y, x = divmod(e, width - 1)
    p = y * width + x + 1  # (y, x+1) and (y+1, x)
    return p, p + width - 1


@njit(cache=True, nogil=True)
def _segment(order: np.ndarray, sorted_costs: np.ndarray, height: int, width: int, scale: float,
             min_size: int) -> np.ndarray:
    n = height * width
    parent = np.arange(n)
    size = np.ones(n, np.int64)
    internal = np.zeros(n)  # Int(C): the weight of the last edge merged into C (edges come sorted)
    rejected = np.empty(len(order), np.int64)
    num_rejected = 0
    for i in range(len(order)):
        e = order[i]
        p, q = _endpoints(e, height, width)
        a, b = _find(parent, p), _find(parent, q)
        if a == b:
            continue
        # skimage keeps these two in C floats: round the same way
        ta = np.float32(internal[a] + scale / size[a])
        tb = np.float32(internal[b] + scale / size[b])
        cost = sorted_costs[i]
        if cost < np.float64(min(ta, tb)):
            root, other = min(a, b), max(a, b)
            parent[other] = root
            size[root] = size[a] + size[b]
            internal[root] = cost
        else:
            rejected[num_rejected] = e
            num_rejected += 1
    for i in range(num_rejected):  # minimum segment size, in the same (sorted) order
        p, q = _endpoints(rejected[i], height, width)
        a, b = _find(parent, p), _find(parent, q)
        if a == b:
            continue
        if size[a] < min_size or size[b] < min_size:
            root, other = min(a, b), max(a, b)
            parent[other] = root
            size[root] = size[a] + size[b]
    labels = np.empty(n, np.int64)
    number = np.full(n, -1, np.int64)
    count = 0
    for p in range(n):  # numbered in raster order of each segment's first pixel, as np.unique does
        r = _find(parent, p)
        if number[r] < 0:
            number[r] = count
            count += 1
        labels[p] = number[r]
    return labels.reshape(height, width)


@dataclass
class EdgeGraph:
    """The 8-connected edge graph of a smoothed image, sorted by cost: what every k shares."""

    order: np.ndarray  # int64 [E] edge indices by increasing cost (np.argsort, as skimage)
    sorted_costs: np.ndarray  # float64 [E]
    height: int
    width: int

    @classmethod
    def from_image(cls, image: np.ndarray, sigma: float = 0.8) -> "EdgeGraph":
        """image [H,W] or [H,W,C] (channels last), any dtype skimage's felzenszwalb takes (ints scaled to [0,1])."""
        image = img_as_float64(np.atleast_3d(np.asarray(image)))
        image = ndimage.gaussian_filter(image, [sigma, sigma, 0], mode="reflect", truncate=4.0)
        height, width = image.shape[:2]
        # skimage's expressions (each difference computed once here), so that every cost is the same float64

        def cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            difference = a - b
            return np.sqrt(np.sum(difference * difference, axis=-1)).ravel()

        costs = np.concatenate([
            cost(image[:, 1:, :], image[:, :width - 1, :]),  # right
            cost(image[1:, :, :], image[:height - 1, :, :]),  # down
            cost(image[1:, 1:, :], image[:height - 1, :width - 1, :]),  # down-right
            cost(image[1:, :width - 1, :], image[:height - 1, 1:, :]),  # up-right
        ])
        order = np.argsort(costs)
        return cls(order, costs[order], height, width)

    def segment(self, k: float, min_size: int) -> np.ndarray:
        """Labels int64 [H,W], 0..R-1: skimage's felzenszwalb(image, scale=k, sigma, min_size)."""
        return _segment(self.order, self.sorted_costs, self.height, self.width, float(k) / 255.0, int(min_size))
