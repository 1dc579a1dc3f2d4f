"""Build docs/reproductions/caswell.md: Caswell, Shen and Wang's numbers beside what our runs show.

    python docs/reproductions/collect.py runs caswell-<name>   # after `loopnets run configs/caswell/<name>.toml`
    python docs/reproductions/build_caswell.py                 # or `make pages`: every page, offline

Reads the committed results (docs/reproductions/results/caswell-*/, written by collect.py) or, with
--runs-dir, run folders; the paper's and its code's numbers from caswell-paper.toml (transcribed); the
prose from caswell.md.j2. Every number the template prints passes through a template field (build_lavik's
Recorder), so tests/test_pages.py can tell computed numbers from typed ones. Each claim is a rule from
verdicts.py, paired over seeds, with the chance floor of the data (data.json); an experiment not
committed yet shows the command that produces it.

Measures (per seed):
  val   = accuracy on the validation split after training (the "original" probe);
  train = accuracy on the training split after training (summary extra.train; Fig. 8's train column);
  off   = the feedback_off probe (a tied model run for one pass);
  time  = training seconds per epoch (summary timing), and its ratio to Vanilla's; the run table sums
          the runs' recorded wall seconds (summary timing.wall_seconds).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verdicts as V  # noqa: E402  (beside this script)
from page_tools import builder_main, load_experiments, render_template  # noqa: E402
from lavik_results import Exp, stat_of  # noqa: E402

RESULTS = HERE / "results"
CONFIGS = ("mnist", "cifar10-batch5", "cifar10-batch32", "synthetic-batch5", "synthetic-batch32", "depth")
CIFAR = ("cifar10-batch5", "cifar10-batch32")  # need the user's CIFAR-10 files (pages.py: optional)
MODELS = (("vanilla", "Vanilla"), ("loopy", "Loopy"), ("plus_layer", "+layer"), ("times_layer", "×layer"),
          ("deep", "Deep"))  # Fig. 8's column order
NO_DROP = 0.005  # "did not decrease": a drop below half a point (or one validation sample, the larger) is none
TIME_BAND = 0.5  # "about k times": within (1 ± 0.5) k


def config_name(config: str) -> str:
    return f"configs/caswell/{config}.toml"


def produce_command(config: str) -> str:
    data = " --data-dir ~/cifar-10-batches-py" if config in CIFAR else ""
    return (f"loopnets run {config_name(config)}{data} --workers 2 && python docs/reproductions/collect.py runs "
            f"caswell-{config}")


# --- per-seed measures ------------------------------------------------------------------------------

def find(e: Exp | None, model: str, unroll: int | None = None) -> str | None:
    """The variant name of `model` (at `unroll`)."""
    if e is None:
        return None
    return next((v["variant"] for v in e.results["variants"]
                 if v["method"] == model and (unroll is None or v["unroll"] == unroll)), None)


def val(e: Exp, variant: str) -> dict[int, float]:
    return e.values(variant, "original", "accuracy")


def off(e: Exp, variant: str) -> dict[int, float]:
    return e.values(variant, "feedback_off", "accuracy")


def train(e: Exp, variant: str) -> dict[int, float]:
    return {seed: float(t["accuracy"]) for seed, s in e.runs.get(variant, {}).items()
            if s.get("status") == "finished" and (t := (s.get("extra") or {}).get("train"))}


def seconds(e: Exp, variant: str) -> dict[int, float]:
    return {seed: ms / 1000 for seed, ms in e.timing(variant).items()}


def counts(e: Exp, variant: str) -> dict | None:
    return next((s["parameter_counts"] for s in e.runs.get(variant, {}).values() if s.get("parameter_counts")), None)


def one_sample(e: Exp) -> float:
    return float(e.data.get("one_sample_accuracy") or 0.0)


def pct(values: dict[int, float]) -> str:
    """Accuracies as "93.1 ± 0.6 %" (one seed: "93.1 ± n/a %"); "—" for none."""
    stat = stat_of(values)
    if stat is None:
        return "—"
    sd = "n/a" if stat["sd"] is None else f"{100 * stat['sd']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {sd} %"


def secs(values: dict[int, float]) -> str:
    stat = stat_of(values)
    if stat is None:
        return "—"
    return f"{stat['mean']:.2f} ± {'n/a' if stat['sd'] is None else format(stat['sd'], '.2f')} s"


def params(c: dict | None) -> str:
    return "—" if c is None else f"{c['conv+fc']:,} / {c['total']:,}"


def mean(values: dict[int, float]) -> float | None:
    return statistics.mean(values.values()) if values else None


# --- claims -----------------------------------------------------------------------------------------

def mnist_claims(e: Exp, target: float) -> list[V.Verdict]:
    base_name = find(e, "mnist_loopy", 1)
    if base_name is None:
        return []
    base = val(e, base_name)
    out = [V.compare(f"validation accuracy {target:.0%} with one unroll", {s: target for s in base}, base, "higher",
                     floor=e.floor(base_name))]
    bound = max(NO_DROP, one_sample(e))
    later = sorted(v["unroll"] for v in e.results["variants"] if v["method"] == "mnist_loopy" and v["unroll"] > 1)
    parts = [V.at_most(f"k = {k} at most {bound:.3f} below k = 1", base, val(e, find(e, "mnist_loopy", k)), bound,
                       floor=e.floor(find(e, "mnist_loopy", k)), digits=3) for k in later]
    if parts:
        out.append(V.all_of("more unrolls do not decrease the validation accuracy", parts))
    return out


def stand_in_claims(e: Exp, batch: int) -> list[V.Verdict]:
    name = {m: find(e, m) for m, _ in MODELS}
    margin = one_sample(e)
    out = []

    def beats(claim: str, better: str, worse: str) -> None:
        if name[better] and name[worse]:
            out.append(V.compare(f"{claim} (batch {batch})", val(e, name[worse]), val(e, name[better]), "higher",
                                 margin=margin, floor=e.floor(name[better])))

    beats("Loopy beats Vanilla", "loopy", "vanilla")
    beats("Loopy beats Deep", "loopy", "deep")
    beats("Deep is worse than Vanilla", "vanilla", "deep")
    if name["loopy"] and name["plus_layer"] and name["times_layer"]:
        parts = []
        for m in ("plus_layer", "times_layer"):
            label = dict(MODELS)[m]
            parts.append(V.compare(f"{label}: train above Loopy's", train(e, name["loopy"]), train(e, name[m]), "higher"))
            parts.append(V.compare(f"{label}: val below Loopy's", val(e, name["loopy"]), val(e, name[m]), "lower",
                                   margin=margin, floor=e.floor(name["loopy"])))
        out.append(V.all_of(f"the loop-layer models overfit: higher train and lower val than Loopy (batch {batch})", parts))
    beats("the additive merge beats the multiplicative one", "plus_layer", "times_layer")
    if name["vanilla"] and name["loopy"] and name["deep"]:
        k = next(v["unroll"] for v in e.results["variants"] if v["variant"] == name["loopy"])
        base = seconds(e, name["vanilla"])
        parts = []
        for m in ("loopy", "deep"):
            claim = f"{dict(MODELS)[m]} trains in about k = {k} times Vanilla's time"
            ratio = {s: t / base[s] for s, t in seconds(e, name[m]).items() if s in base}
            parts.append(V.timing_measurable(claim, [e.independent(name["vanilla"]), e.independent(name[m])])
                         or V.at_most(f"{claim}: within {TIME_BAND:.0%} of k", {s: float(k) for s in ratio}, ratio,
                                      TIME_BAND * k, two_sided=True, digits=2))
        out.append(V.all_of(f"Loopy and Deep cost about k times Vanilla (batch {batch})", parts))
    return out


# --- the page ---------------------------------------------------------------------------------------

def settings(results_dir: Path, name: str) -> dict:
    path = results_dir / name / "experiment.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def run_row(e: Exp, config: dict) -> dict:
    n = sum(len(s) for s in e.runs.values())
    done = sum(s.get("status") == "finished" for seeds in e.runs.values() for s in seeds.values())
    seeds = sorted({s for seeds_ in e.runs.values() for s in seeds_})
    train_cfg = config.get("train", {})
    return {"runs": f"{done} of {n}", "epochs": str(train_cfg.get("epochs", "—")), "seeds": str(len(seeds)),
            "batch": str(train_cfg.get("batch_size", "—")), "minutes": f"{e.wall_minutes():.1f}", "threads": e.threads(),
                 "load": f"{max(e.loads(), default=0.0):.1f}"}


def context(exps: dict[str, Exp], configs: dict[str, dict], paper: dict) -> dict:
    c: dict = {"paper": paper, "level": f"{V.LEVEL:.0%}", "no_drop": f"{NO_DROP:.3f}",
               "time_band": f"{TIME_BAND:.0%}",
               "missing": [(f"caswell-{k}", produce_command(k)) for k in CONFIGS if k not in exps and k not in CIFAR],
               "cifar_missing": [(k, produce_command(k)) for k in CIFAR if k not in exps]}
    c["runs"] = [(config_name(k), run_row(exps[k], configs[k]) if k in exps else None, produce_command(k)) for k in CONFIGS]
    c["data"] = {k: {"n_train": f"{e.data['n_train']:,}", "n_val": f"{e.data['n_val']:,}",
                     "one_sample": f"{one_sample(e):.3f}", "chance": f"{e.chance:.3f}" if e.chance else "—"}
                 for k, e in exps.items() if e.data.get("n_train")}
    c["stand_in_data"] = c["data"].get("synthetic-batch32") or c["data"].get("synthetic-batch5")
    c["mnist_data"] = c["data"].get("mnist")
    c["target"] = f"{paper['mnist']['target']:.0%}"
    c["mnist"] = None
    if "mnist" in exps:
        e = exps["mnist"]
        rows = []
        for v in sorted((v for v in e.results["variants"] if v["method"] == "mnist_loopy"), key=lambda v: v["unroll"]):
            n = v["variant"]
            rows.append((str(v["unroll"]), v["unroll"] == 1, pct(val(e, n)), pct(train(e, n)), pct(off(e, n)),
                         secs(seconds(e, n)), params(counts(e, n))))
        c["mnist"] = {"rows": rows, "claims": [x.markdown() for x in mnist_claims(e, paper["mnist"]["target"])],
                      "epochs": str(configs["mnist"].get("train", {}).get("epochs", "—"))}
        x3 = find(e, "mnist_loopy", 3)
        run = next(((seed, s) for seed, s in sorted(e.runs.get(x3, {}).items()) if (s.get("extra") or {}).get("guided")),
                   None) if x3 else None
        if run:
            seed, s = run
            guided, merge = s["extra"]["guided"], s["extra"].get("merge")
            width = max(len(g["corr_with_unroll_0"]) for g in guided["layers"].values())
            c["guided"] = {"seed": str(seed), "images": str(guided["images"]), "filter": str(guided["filter"]),
                           "unrolls": [str(i) for i in range(width)], "folder": f"caswell-mnist/{x3}/seed={seed}",
                           "rows": [(layer, [f"{x:.2f}" if x is not None else "—" for x in g["corr_with_unroll_0"]]
                                     + [""] * (width - len(g["corr_with_unroll_0"])))
                                    for layer, g in guided["layers"].items()],
                           "merge": [(str(t), f"{x:.3f}") for t, x in enumerate(merge["mean_abs_change"], start=1)]
                           if merge else []}
    c.setdefault("guided", None)
    c["cifar"] = []
    for k in CIFAR:
        batch = int(k.removeprefix("cifar10-batch"))
        fig = paper["fig8"][str(batch)]
        e = exps.get(k)
        rows = []
        for m, label in MODELS:
            theirs = [f"{fig[col][m]:g} %" if m in fig[col] else "—" for col in ("train", "val", "test")]
            n = find(e, m)
            ours = [pct(train(e, n)), pct(val(e, n)), secs(seconds(e, n))] if n else ["", "", ""]
            rows.append([label] + theirs + ours)
        c["cifar"].append({"batch": str(batch), "rows": rows, "present": e is not None, "command": produce_command(k),
                           "status": e.results["status"] if e else None})
    c["stand_in"] = []
    for k in ("synthetic-batch5", "synthetic-batch32"):
        batch = k.removeprefix("synthetic-batch")
        e = exps.get(k)
        if e is None:
            c["stand_in"].append({"batch": batch, "present": False, "command": produce_command(k)})
            continue
        base = mean(seconds(e, find(e, "vanilla"))) if find(e, "vanilla") else None
        rows = []
        for m, label in MODELS:
            n = find(e, m)
            if n is None:
                continue
            unroll = next(v["unroll"] for v in e.results["variants"] if v["variant"] == n)
            t = mean(seconds(e, n))
            rows.append((label if m == "vanilla" else f"{label} x{unroll}", pct(train(e, n)), pct(val(e, n)), pct(off(e, n)),
                         secs(seconds(e, n)), f"{t / base:.2f}" if t and base else "—", params(counts(e, n))))
        c["stand_in"].append({"batch": batch, "present": True, "rows": rows, "status": e.results["status"],
                              "claims": [x.markdown() for x in stand_in_claims(e, int(batch))]})
    c["depth"] = None
    if "depth" in exps:
        e = exps["depth"]
        rows = []
        vanilla = find(e, "vanilla")
        if vanilla:
            cnt = counts(e, vanilla)
            rows.append({"depth": "3", "k": "1", "tied": pct(val(e, vanilla)), "untied": "(the same network)", "verdict": "",
                         "tied_params": "—" if cnt is None else f"{cnt['conv+fc']:,}", "untied_params": "",
                         "tied_s": secs(seconds(e, vanilla)), "untied_s": ""})
        ks = sorted({v["unroll"] for v in e.results["variants"] if v["method"] in ("loopy", "deep")})
        sweeps = []
        for k in ks:
            tied, untied = find(e, "loopy", k), find(e, "deep", k)
            if not (tied and untied):
                continue
            verdict = V.compare(f"k = {k}: tied beats untied", val(e, untied), val(e, tied), "higher",
                                margin=one_sample(e), floor=e.floor(tied))
            ct, cu = counts(e, tied), counts(e, untied)
            rows.append({"depth": str(3 * k), "k": str(k), "tied": pct(val(e, tied)), "untied": pct(val(e, untied)),
                         "verdict": verdict.markdown(), "tied_params": "—" if ct is None else f"{ct['conv+fc']:,}",
                         "untied_params": "—" if cu is None else f"{cu['conv+fc']:,}",
                         "tied_s": secs(seconds(e, tied)), "untied_s": secs(seconds(e, untied))})
            found = [x["unroll_sweep"] for s in e.runs.get(tied, {}).values()
                     if s.get("status") == "finished" and (x := s.get("extra") or {}).get("unroll_sweep")]
            if found:
                cells = [(str(n), f"{100 * statistics.mean(f['accuracy'][i] for f in found):.1f} %", n == k)
                         for i, n in enumerate(found[0]["unrolls"])]
                sweeps.append((str(k), cells))
        c["depth"] = {"rows": rows, "sweeps": sweeps}
    return c


def load_all(results_dir: Path) -> tuple[dict[str, Exp], dict[str, dict]]:
    exps = load_experiments(results_dir, {k: f"caswell-{k}" for k in CONFIGS})
    return exps, {k: settings(Path(results_dir), f"caswell-{k}") for k in exps}


def render(results_dir: Path) -> tuple[str, set[str]]:
    """(the page, the numbers the template printed through its fields)."""
    paper = tomllib.loads((HERE / "caswell-paper.toml").read_text())
    return render_template("caswell.md.j2", context(*load_all(results_dir), paper))


def build(results_dir: Path, out: Path) -> str:
    text, _ = render(Path(results_dir))
    Path(out).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    builder_main(render, __doc__, HERE / "caswell.md", argv)


if __name__ == "__main__":
    main()
