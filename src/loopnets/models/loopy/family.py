"""The loopy_cnn family: Caswell, Shen and Wang's loopy CNNs as experiments.

Schema and expansion: `loopnets.models.loopy.schema`; building and the runs' extra results and
analyses: `loopnets.models.loopy.experiments`. The report gathers the analyses' PNGs with the
captions below.
"""

from __future__ import annotations

from loopnets.experiments.families import Family, register
from loopnets.models.loopy import schema
from loopnets.models.loopy.experiments import build_loopy_model, extra_results, parameter_counts


class LoopyCNNs(Family):
    """Loopy CNNs (and their unrolled / feed-forward comparisons) on images."""

    name = schema.FAMILY
    table = "loopy"
    settings = schema.LoopyConfig
    variant_keys = schema.LoopyVariantConfig
    analyses = schema.LOOPY_ANALYSES
    variants_example = "model = [\"vanilla\", \"loopy\", \"deep\"], unroll = 3"
    figure_captions = {
        "guided_": "guided backpropagation (Caswell et al. sec 6.4, Fig 10): validation images, then the map of "
                   "filter 0 of {layer} onto the input at every unroll",
        "merge": "merge-node images (Fig 9): validation images, then what the first conv receives before each unroll",
    }

    def check(self, exp) -> None:
        schema.check(exp)

    def expand(self, exp) -> list:
        return schema.expand(exp)

    def build_model(self, exp, variant, split):
        return build_loopy_model(exp, variant, split)

    def extra_results(self, exp, variant, model, split, loss, seed):
        return extra_results(exp, variant, model, split, loss, seed)

    def summary_extras(self, exp, variant, model, split, loss, finished) -> dict:
        return {"parameter_counts": parameter_counts(model)}


FAMILY = register(LoopyCNNs())
