"""Analyses and figures of trained models: numbers first, an optional PNG second.

Public:
  - feedback_histograms, noise_curves, bottleneck_tsne, contrast_sweep, image_strip: feedback-gated
    networks (Kemmerling; `loopnets.models.gated.figures`);
  - guided_backprop, guided_relus, merge_images, image_grid: loopy CNNs (Caswell et al.;
    `loopnets.models.loopy.figures`).

Each family's figures live in its package (`loopnets.models.<family>.figures`); this package
re-exports them, so `ln.viz.<name>` is one place to find them all.
"""

from loopnets.models.gated.figures import bottleneck_tsne, contrast_sweep, feedback_histograms, image_strip, noise_curves
from loopnets.models.loopy.figures import guided_backprop, guided_relus, image_grid, merge_images

__all__ = [
    "feedback_histograms",
    "noise_curves",
    "bottleneck_tsne",
    "contrast_sweep",
    "image_strip",
    "guided_backprop",
    "guided_relus",
    "merge_images",
    "image_grid",
]
