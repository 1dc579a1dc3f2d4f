"""Data sets, offline: each loader returns tensors with a documented split and normalisation."""

from loopnets.data.bike import load_bike
from loopnets.data.cifar import caswell_mnist, load_cifar10, synthetic_cifar
from loopnets.data.digits import load_digits
from loopnets.data.hershey import (
    AnomalySequences,
    AnomalySplit,
    HersheySplit,
    hershey_classification,
    hershey_mnist,
    hershey_random_anomaly,
    hershey_uniform_anomaly,
    load_hershey,
)
from loopnets.data.idx import load_fashion_mnist, load_mnist_files
from loopnets.data.iris import load_iris
from loopnets.data.meats import load_meats
from loopnets.data.mnist import load_mnist
from loopnets.data.registry import (
    DATASETS,
    MissingPackageError,
    check_dataset_options,
    dataset_options,
    default_loss,
    describe_dataset,
    load_dataset,
)
from loopnets.data.spectra import load_spectra
from loopnets.data.split import Split

__all__ = [
    "AnomalySequences",
    "AnomalySplit",
    "HersheySplit",
    "hershey_classification",
    "hershey_mnist",
    "hershey_random_anomaly",
    "hershey_uniform_anomaly",
    "load_hershey",
    "DATASETS",
    "MissingPackageError",
    "Split",
    "caswell_mnist",
    "check_dataset_options",
    "dataset_options",
    "default_loss",
    "describe_dataset",
    "load_bike",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_iris",
    "load_meats",
    "load_mnist",
    "load_mnist_files",
    "load_spectra",
    "synthetic_cifar",
]
