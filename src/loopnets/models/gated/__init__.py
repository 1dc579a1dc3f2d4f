"""Feedback-gated ReLU networks (Kemmerling): the model family `ln.gated`."""

from loopnets.models.gated.network import (
    MODES,
    feedback_gated_relu,
    feedback_gain,
    FeedbackGatedReLU,
    GatedNetwork,
    GatedPass,
    dense_autoencoder,
    conv_autoencoder,
)

__all__ = [
    "MODES",
    "feedback_gated_relu",
    "feedback_gain",
    "FeedbackGatedReLU",
    "GatedNetwork",
    "GatedPass",
    "dense_autoencoder",
    "conv_autoencoder",
]
