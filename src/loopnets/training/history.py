"""What a training run returns: one EpochRecord per epoch in a History, or TrainingDiverged."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class EpochRecord:
    """One epoch of training. Losses are over the whole (train / val) set; see `fit`."""

    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None  # None without val data
    val_accuracy: float | None  # None without val data or for a non-classification loss
    train_seconds: float
    val_seconds: float  # 0.0 without val data


@dataclass
class History:
    """Per-epoch records of one `fit` call, plus how it ended.

    `history["val_loss"]` gives a column as a list (columns: EpochRecord's fields),
    `history[-1]` the last EpochRecord, `len(history)` the number of finished epochs.

    Attributes:
        records: one EpochRecord per finished epoch.
        stopped_early: early stopping ended training before `epochs`.
        best_epoch: the epoch with the lowest validation loss (None without val data).
        diverged: training raised TrainingDiverged (the records are the epochs before it).
    """

    records: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    diverged: bool = False

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(EpochRecord))
    RECORD: ClassVar[type] = EpochRecord  # the per-epoch record type (a subclass may add val_ columns)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.COLUMNS:
                raise KeyError(f"unknown history column {key!r}; columns: {', '.join(self.COLUMNS)}")
            return [getattr(record, key) for record in self.records]
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def to_dict(self) -> dict:
        """A JSON-able dict (`json.dumps(history.to_dict())`); inverse of `History.from_dict`."""
        return {
            "records": [asdict(record) for record in self.records],
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "diverged": self.diverged,
        }

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(
            records=[cls.RECORD(**record) for record in data["records"]],
            stopped_early=data["stopped_early"],
            best_epoch=data["best_epoch"],
            diverged=data["diverged"],
        )


class TrainingDiverged(RuntimeError):
    """The loss became nan or inf. `.history` holds the epochs finished before it."""

    def __init__(self, message: str, history: History | None = None):
        super().__init__(message)
        self.history = history

    def __reduce__(self):  # picklable with its history (runs in worker processes raise it)
        return (type(self), (str(self), self.history))
