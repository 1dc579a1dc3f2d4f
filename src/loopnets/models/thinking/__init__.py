"""Networks that think longer (issue 18): DeepThinking's recurrent conv nets with recall, their
feedforward baseline, and a looped transformer. The model family `loopnets.models.thinking`."""

from loopnets.models.thinking.recurrent import RECALLS, ResidualBlock, feedforward_conv, recurrent_conv
from loopnets.models.thinking.transformer import looped_transformer

__all__ = ["RECALLS", "ResidualBlock", "feedforward_conv", "looped_transformer", "recurrent_conv"]
