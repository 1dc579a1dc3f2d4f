"""The inn family: Hershey's iterative neural networks and the LSTM baseline as experiments.

Schema, expansion and the data's shape: `loopnets.models.inn.schema`; the family's own data,
training loops and results: `loopnets.models.inn.experiments`. It trains its own way
(`train_run`), on its own data sets (hershey_*), and is validated without generating data or
building the (possibly huge) weight spaces.
"""

from __future__ import annotations

from loopnets.experiments.budget import Estimate
from loopnets.experiments.families import Family, register
from loopnets.models.inn import experiments, schema


class IterativeNetworks(Family):
    """Iterative networks (masked weight spaces) and the LSTM baseline, on Hershey's tasks."""

    name = schema.FAMILY
    table = "inn"
    settings = schema.INNConfig
    variant_keys = schema.INNVariantConfig
    variants_example = "model = \"inn\", density = [0.2, 0.05]"

    def check(self, exp) -> None:
        schema.check_values(exp)

    def expand(self, exp) -> list:
        return schema.expand(exp)

    def validate(self, exp) -> list:
        return experiments.validate(exp)

    def prepare(self, exp) -> bool:
        experiments.load_data(exp)  # generate the data now: a bad data option is a ConfigError before any folder
        return True

    def data_facts(self, exp) -> dict | None:
        """Anomaly sequences: ACC_end picks the anomaly's step among L, so chance is 1 / L."""
        return experiments.data_facts(exp)

    def memory_estimates(self, exp) -> list:
        """A weight space of n rows over the inputs and itself (the IterativeNetwork's masked dense
        weights, or the LSTM's four gates), its activations n per step."""
        outputs, _ = schema.data_shape(exp)
        estimates = []
        for variant in schema.expand(exp):
            n = experiments.sizes(exp, variant, outputs)
            params = (4 if variant.model == "lstm" else 1) * n * (schema.INPUTS + n)
            batch = max(1, exp.train.batch_size)
            estimates.append((variant, Estimate(params, batch * n * variant.iterations, 4, variant.iterations, batch)))
        return estimates

    def train_run(self, exp, variant, seed, experiment, started, engine):
        return experiments.train_run(exp, variant, seed, experiment, started, engine=engine)


FAMILY = register(IterativeNetworks())
