"""Analyses and figures of trained models: numbers first, an optional PNG second.

Public: feedback_histograms, noise_curves, bottleneck_tsne, contrast_sweep, image_strip
(feedback-gated networks, Kemmerling; see `loopnets.viz.gated`).
"""

from loopnets.viz.gated import bottleneck_tsne, contrast_sweep, feedback_histograms, image_strip, noise_curves

__all__ = ["feedback_histograms", "noise_curves", "bottleneck_tsne", "contrast_sweep", "image_strip"]
