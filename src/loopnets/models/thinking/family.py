"""The thinking family: networks that think longer (issue 18) as experiments and reports.

Schema and expansion: `loopnets.models.thinking.schema`; data, building, training and the runs'
extra results: `loopnets.models.thinking.experiments`; the report's section:
`loopnets.models.thinking.report`. The family trains its own way (`train_run`: `ln.fit`, or
`ln.fit_halting` for a halting variant) on its own generated data (prefix sums, mazes).
"""

from __future__ import annotations

from loopnets.experiments.families import Family, register
from loopnets.models.thinking import experiments, schema
from loopnets.models.thinking.report import thinking_results, thinking_section


class Thinking(Family):
    """DeepThinking's recurrent conv nets (recall, progressive loss), their feedforward baseline, the
    looped transformer and PonderNet halting, trained small and tested large."""

    name = schema.FAMILY
    table = "thinking"
    settings = schema.ThinkingConfig
    variant_keys = schema.ThinkingVariantConfig
    variants_example = "name = \"recall-progressive\", recall = \"concat\", backprop = \"progressive\""
    label_by_name = True

    def check(self, exp) -> None:
        schema.check(exp)

    def expand(self, exp) -> list:
        return schema.expand(exp)

    def validate(self, exp) -> list:
        return experiments.validate(exp)

    def prepare(self, exp) -> bool:
        experiments.training_data(exp)  # generate the training data now, before any run folder
        return True

    def load_split(self, exp, split):
        """The generated training and validation data (data.name is not used), for readers of the
        experiment's data such as docs/reproductions/collect.py."""
        return experiments.split_of(exp)

    def memory_estimates(self, exp) -> list:
        return experiments.memory_estimates(exp)

    def train_run(self, exp, variant, seed, experiment, started, engine):
        return experiments.train_run(exp, variant, seed, experiment, started, engine=engine)

    def report_section(self, experiment, out) -> list:
        return thinking_section(experiment, out)

    def report_results(self, experiment) -> dict | None:
        return {"thinking": thinking_results(experiment)}


FAMILY = register(Thinking())
