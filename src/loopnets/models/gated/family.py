"""The gated_autoencoder family: Kemmerling's feedback-gated autoencoder as experiments and reports.

Schema and expansion: `loopnets.models.gated.schema`; building and the runs' extra results and
analyses: `loopnets.models.gated.experiments`; the report's section: `loopnets.models.gated.report`.
"""

from __future__ import annotations

import math

from loopnets.data.split import autoencoding
from loopnets.experiments.families import Family, register
from loopnets.models.gated import schema
from loopnets.models.gated.experiments import build_gated_model, extra_results
from loopnets.models.gated.report import gated_results, gated_section


class GatedAutoencoder(Family):
    """Kemmerling's feedback-gated ReLU autoencoder, trained X -> X."""

    name = schema.FAMILY
    table = "gated"
    settings = schema.GatedConfig
    variant_keys = schema.GatedVariantConfig
    train_keys = schema.GatedTrain
    analyses = schema.GATED_ANALYSES
    variants_example = "feedback = [\"none\", \"partial\"]"
    gathers_own_figures = True
    label_by_name = True

    def check(self, exp) -> None:
        schema.check(exp)

    def expand(self, exp) -> list:
        return schema.expand(exp)

    def load_split(self, exp, split):
        return autoencoding(split)  # X -> X: the inputs are also the targets

    def build_model(self, exp, variant, split):
        return build_gated_model(exp, variant, split)

    def extra_results(self, exp, variant, model, split, loss, seed):
        return extra_results(exp, model, split, loss, seed)

    def report_section(self, experiment, out) -> list:
        return gated_section(experiment, out)

    def report_results(self, experiment) -> dict | None:
        return {"gated": gated_results(experiment)}  # results.json's key since the family was added

    def variant_results(self, variant) -> dict:
        """summary.json extra.noise, averaged over the finished seeds."""
        curve = variant.noise_curve()
        finite = (lambda x: x if x is not None and math.isfinite(x) else None)
        return {"noise": None if curve is None else {"sigmas": curve[0], "loss_mean": [finite(x) for x in curve[1]]}}


FAMILY = register(GatedAutoencoder())
