"""Analyses and figures of trained models: numbers first, an optional PNG second.

Public:
  - feedback_histograms, noise_curves, bottleneck_tsne, contrast_sweep, image_strip: feedback-gated
    networks (Kemmerling; `loopnets.viz.gated`);
  - guided_backprop, guided_relus, merge_images, image_grid: loopy CNNs (Caswell et al.;
    `loopnets.viz.loopy`).
"""

from loopnets.viz.gated import bottleneck_tsne, contrast_sweep, feedback_histograms, image_strip, noise_curves
from loopnets.viz.loopy import guided_backprop, guided_relus, image_grid, merge_images

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
