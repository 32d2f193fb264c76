"""Direct, slow implementations of the range methods, written from DESIGN.md's words.

They are the yardstick for the fast closed-form versions in int8kit.calib.methods.
"""

import numpy as np


def kl(p, q):
    p = p / p.sum()
    q = q / q.sum()
    out = 0.0
    for pi, qi in zip(p, q, strict=True):
        if pi > 0:
            if qi == 0:
                return np.inf
            out += pi * np.log(pi / qi)
    return out


def entropy_amax(counts, edges):
    bins = counts.astype(np.float64).copy()
    bins[0] = bins[1]
    n = len(bins)
    best_i, best = None, np.inf
    for i in range(128, n + 1):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()
        group = np.digitize(np.arange(i), np.linspace(0, i, 129)) - 1
        q = np.zeros(i)
        for g in range(128):
            members = np.flatnonzero((group == g) & (bins[:i] > 0))
            if members.size:
                q[members] = bins[:i][group == g].sum() / members.size
        d = kl(p, q) if q.sum() > 0 else np.inf
        if d <= best:  # ties: the larger i
            best, best_i = d, i
    return edges[best_i], best_i


def mse_amax(counts, edges):
    centres = (edges[1:] + edges[:-1]) / 2
    best, best_c = np.inf, None
    for k in range(128, len(centres)):
        s = centres[k] / 127
        q = np.minimum(np.round(centres / s), 127) * s
        e = ((q - centres) ** 2 * counts).sum()
        if e < best:
            best, best_c = e, centres[k]
    return best_c
