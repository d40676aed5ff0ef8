"""Mixup and cutmix for copy-detection training (SSCD, Pizzi et al. 2022, §3.3): a mixed image
shows two instances, so its InfoNCE target is spread over the views of both ("multiple
positives") and neither counts as its negative in the entropy term.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def mix_batch(
    x: torch.Tensor,
    instance: torch.Tensor,
    p: float,
    alpha: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Mixup or cutmix each image with probability ``p`` (``lam ~ Beta(alpha, alpha)``), in place;
    returns soft instance memberships ``[M, M]``.

    Membership row ``a`` spreads 1 over the instances image ``a`` shows (itself only, unless it
    was mixed: then ``lam`` on its own, ``1 - lam`` on the other image's instance).
    """
    m = len(x)
    membership = (instance[:, None] == instance[None, :]).float()
    membership = membership / membership.sum(dim=1, keepdim=True)  # duplicates share the weight
    chosen = np.flatnonzero(rng.random(m) < p)
    if not len(chosen):
        return membership
    source = x.clone()
    side = x.shape[-1]
    for a in chosen.tolist():
        b = int(rng.integers(m))
        if instance[b] == instance[a]:
            continue
        lam = float(rng.beta(alpha, alpha))
        if rng.random() < 0.5:  # mixup
            x[a] = lam * source[a] + (1 - lam) * source[b]
        else:  # cutmix: a box of area (1 - lam) from b
            cut = int(side * math.sqrt(1 - lam))
            top, left = int(rng.integers(0, side - cut + 1)), int(rng.integers(0, side - cut + 1))
            x[a, :, top : top + cut, left : left + cut] = source[
                b, :, top : top + cut, left : left + cut
            ]
            lam = 1 - cut * cut / (side * side)
        membership[a] = lam * membership[a] + (1 - lam) * membership[b]
    return membership
