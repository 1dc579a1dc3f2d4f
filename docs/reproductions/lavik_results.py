"""One Lavik experiment's results as build_lavik.py reads them: the committed results
(results/<experiment>/: results.json, data.json, curves.json, <variant>/seed=<n>/summary.json,
written by collect.py) or a run folder (<experiment>/report/results.json and the runs beside it).
Per-seed values come from the runs' summaries, so comparisons can pair seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


class Exp:
    """One experiment's results: results.json, data.json, each run's summary.json (variant -> seed ->
    summary) and curves.json."""

    def __init__(self, name: str, results: dict, data: dict, runs: dict[str, dict[int, dict]], curves: dict) -> None:
        self.name, self.results, self.data, self.runs, self.curves = name, results, data, runs, curves

    @property
    def classification(self) -> bool:
        return self.results["task"] == "classification"

    @property
    def metric(self) -> str:
        return "accuracy" if self.classification else "loss"

    @property
    def higher_is_better(self) -> bool:
        return self.classification

    @property
    def chance(self) -> float | None:
        if self.classification:
            levels = [self.data.get("chance_accuracy"), self.data.get("majority_accuracy")]
            return max((x for x in levels if x is not None), default=None)
        return self.data.get("mean_predictor_rmse") if self.results["loss"] in ("rmse", "mse_rmse") else None

    def variant(self, name: str) -> dict | None:
        return next((v for v in self.results["variants"] if v["variant"] == name), None)

    def values(self, variant: str, probe: str = "original", metric: str | None = None) -> dict[int, float]:
        """seed -> the probe's metric, over the finished runs."""
        out = {}
        for seed, s in self.runs.get(variant, {}).items():
            value = ((s.get("probes") or {}).get(probe) or {}).get(metric or self.metric)
            if s.get("status") == "finished" and value is not None:
                out[seed] = float(value)
        return out

    def timing(self, variant: str, key: str = "train_ms_per_epoch") -> dict[int, float]:
        return {seed: s["timing"][key] for seed, s in self.runs.get(variant, {}).items()
                if s.get("status") == "finished" and (s.get("timing") or {}).get(key) is not None}

    def independent(self, variant: str) -> int:
        t = (self.variant(variant) or {}).get("timing", {}).get("train_ms_per_epoch") or {}
        return int(t.get("independent_measurements") or 0)

    def floor(self, variant: str) -> tuple[dict[int, float], float, bool] | None:
        chance = self.chance
        return None if chance is None else (self.values(variant), chance, self.higher_is_better)

    def loads(self) -> list[float]:
        """Each run's load average per core at its end (1-minute), where recorded."""
        out = []
        for seeds in self.runs.values():
            for s in seeds.values():
                env = s.get("environment") or {}
                end = (env.get("load_average") or {}).get("end")
                if end and env.get("cpu_count"):
                    out.append(end[0] / env["cpu_count"])
        return out

    def together(self) -> list[int]:
        return [(s.get("training") or {}).get("models_together") or 1 for seeds in self.runs.values() for s in seeds.values()]

    def threads(self) -> str:
        """'torch threads / cores' of its runs (1 / 2: two runs shared the two cores)."""
        pairs = sorted({(env.get("torch_threads"), env.get("cpu_count")) for seeds in self.runs.values()
                        for s in seeds.values() if (env := s.get("environment") or {}).get("torch_threads")})
        return ", ".join(f"{t} / {c}" for t, c in pairs) or "—"

    def wall_minutes(self) -> float:
        return sum((s.get("timing") or {}).get("wall_seconds") or 0.0 for seeds in self.runs.values() for s in seeds.values()) / 60


def load(results_dir: Path, name: str) -> Exp | None:
    """The committed results (results_dir/<name>/results.json) or a run folder (<name>/report/results.json)."""
    root = results_dir / name
    path = next((p for p in (root / "results.json", root / "report" / "results.json") if p.is_file()), None)
    if path is None:
        return None
    runs: dict[str, dict[int, dict]] = {}
    for p in sorted(root.glob("*/seed=*/summary.json")):
        runs.setdefault(p.parent.parent.name, {})[int(p.parent.name.removeprefix("seed="))] = json.loads(p.read_text())
    data = json.loads((root / "data.json").read_text()) if (root / "data.json").is_file() else {}
    if not data and (root / "experiment.toml").is_file():
        from collect import data_facts  # a run folder: read the data's facts now

        data = data_facts(root / "experiment.toml")
    if (root / "curves.json").is_file():
        curves = json.loads((root / "curves.json").read_text())
    else:  # a run folder: the same curves collect.py would write
        from collect import curve_of

        curves = {}
        for p in sorted(root.glob("*/seed=*/metrics.csv")):
            if (c := curve_of(p)) is not None:
                curves.setdefault(p.parent.parent.name, {})[p.parent.name.removeprefix("seed=")] = c
    return Exp(name, json.loads(path.read_text()), data, runs, curves)


def stat_of(values: dict[int, float]) -> dict | None:
    v = list(values.values())
    if not v:
        return None
    return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else None, "n": len(v)}


def mean(exp: Exp, variant: str, probe: str = "original", metric: str | None = None) -> float | None:
    stat = stat_of(exp.values(variant, probe, metric))
    return None if stat is None else stat["mean"]
