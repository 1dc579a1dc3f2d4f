"""Build docs/reproductions/lavik.md: our runs of configs/lavik/*.toml beside the thesis's numbers.

    python docs/reproductions/collect.py runs          # after `loopnets run configs/lavik/<name>.toml`
    python docs/reproductions/build_lavik.py           # or `make pages`: every page, offline

Reads the committed results (docs/reproductions/results/<experiment>/: results.json, the runs'
summary.json, data.json, curves.json; written by collect.py) or, with --runs-dir, run folders; the
thesis's and `neurons`' numbers from lavik-thesis.toml (transcribed); the prose from lavik.md.j2.
Every number the template prints passes through a template field (Jinja2's finalize records it),
so tests/test_pages.py can tell computed numbers from typed ones; the claims are rules from
verdicts.py that print the numbers they were judged on.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import jinja2

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verdicts as V  # noqa: E402  (beside this script)
from lavik_results import Exp, load, mean, stat_of  # noqa: E402

RESULTS = HERE / "results"
NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?")
EXPERIMENTS = {  # our experiment -> (title, the thesis tables it sits beside)
    "lavik-iris": ("Iris classification", "Tables B.1, C.1"),
    "lavik-meats-dense-classification": ("Spectroscopy, dense, classification (meats for FTIR)", "Tables B.2 / 4.4, C.2"),
    "lavik-meats-dense-regression": ("Spectroscopy, dense, regression (meats for FTIR)", "Tables B.4, C.4"),
    "lavik-meats-conv-classification": ("Spectroscopy, conv, classification (meats for FTIR)", "Tables B.3, C.3"),
    "lavik-meats-conv-regression": ("Spectroscopy, conv, regression (meats for FTIR)", "Tables B.5, C.5"),
    "lavik-bike": ("Bike-sharing regression (synthetic stand-in)", "Tables B.6, C.6"),
    "lavik-ftir-timing-conv": ("Timing at the FTIR sizes, conv (synthetic spectra)", "Tables 4.5, C.3"),
    "lavik-ftir-timing-dense": ("Timing at the FTIR sizes, dense (synthetic spectra)", "Table C.2"),
    "lavik-mnist-tiny-cnn": ("MNIST tiny CNN (the `neurons` comparison)", "`neurons` repository tables"),
    "lavik-iris-weighted": ("Iris, weighted COMBINE / COUPLE (eqs 5.1 / 5.2)", "no thesis run"),
    "lavik-iris-input-skip": ("Iris, input-to-input skip (Fig. 3.3)", "no thesis run"),
    "lavik-meats-dense-classification-weighted": ("Meats dense classification, weighted COMBINE / COUPLE (eqs 5.1 / 5.2)",
                                                  "no thesis run"),
}
TIMING_ONLY = ("lavik-ftir-timing-conv", "lavik-ftir-timing-dense")
ADDITIONS = {  # addition -> (the plain experiment its variants pair with, what differs)
    "lavik-iris-weighted": ("lavik-iris", "weighted (eqs 5.1 / 5.2)"),
    "lavik-iris-input-skip": ("lavik-iris", "input-to-input skip"),
    "lavik-meats-dense-classification-weighted": ("lavik-meats-dense-classification", "weighted (eqs 5.1 / 5.2)"),
}
REGRESSION = ("lavik-meats-dense-regression", "lavik-meats-conv-regression", "lavik-bike")


def config_name(experiment: str) -> str:
    return f"configs/lavik/{experiment.removeprefix('lavik-')}.toml"


def produce_command(experiment: str) -> str:
    return f"loopnets run {config_name(experiment)} --workers 2 && python docs/reproductions/collect.py runs {experiment}"


# --- the thesis's numbers ------------------------------------------------------------------------

def thesis_mean(text: str | None) -> float | None:
    return None if not text else float(str(text).split("±")[0])


def thesis_numbers(reference: dict) -> set[str]:
    """Every number written in lavik-thesis.toml (its values), as written."""
    out: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            out.update(m.group().lstrip("+") for m in NUMBER.finditer(str(x)))
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                out.add(f"{x:,}" if isinstance(x, int) else str(x))

    walk(reference)
    return out


# --- formatting (every number leaves through these, then through the template's finalize) -------------

def cell(stat: dict | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    mean, sd = stat["mean"], stat.get("sd")
    fmt = (lambda v: f"{v:.2e}") if abs(mean) >= 1000 else (lambda v: f"{v:.{digits}f}")
    return f"{fmt(mean)} ± {fmt(sd)}" if sd is not None and stat.get("n", 2) > 1 else f"{fmt(mean)} ± n/a"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


# --- tables -----------------------------------------------------------------------------------------

def probe_table(exp: Exp, reference: dict) -> str:
    metrics = ("accuracy", "loss") if exp.classification else ("loss",)
    blocks = []
    for metric in metrics:
        unit = "accuracy" if metric == "accuracy" else f"{exp.results['loss']} (lower is better)"
        lines = [f"Validation {unit}; thesis / ours, mean ± sd over seeds (ours: {_seeds(exp)}).", "",
                 "| Model | Original: thesis | ours | Skip off: thesis | ours | Feedback off: thesis | ours |",
                 "|:---|---:|---:|---:|---:|---:|---:|"]
        for v in exp.results["variants"]:
            ref = reference.get(v["variant"], {})
            ours = [cell(stat_of(exp.values(v["variant"], probe, metric))) for probe in ("original", "skip_off", "feedback_off")]
            lines.append(f"| {v['label']} | {ref.get(metric, '—')} | {ours[0]} | {ref.get('skip_off_' + metric, '—')} | {ours[1]} "
                         f"| {ref.get('feedback_off_' + metric, '—')} | {ours[2]} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def timing_table(exp: Exp, reference: dict) -> str:
    mnist = exp.name == "lavik-mnist-tiny-cnn"
    ref_key, ref_unit = ("train_s", "s") if mnist else ("train_ms", "ms")
    ffn_ref = {s: thesis_mean(reference.get("ffn" + s, {}).get(ref_key)) for s in ("", "-skip")}
    ffn_ours = {("-skip" if v["skip"] else ""): (stat_of(exp.timing(v["variant"])) or {}).get("mean")
                for v in exp.results["variants"] if v["method"] == "ffn"}
    lines = [f"Per-epoch time: thesis (Rust on an Apple M2; training in {ref_unit}, validation in ms) and ours (ms, PyTorch "
             f"on this machine; see the timing caveats above), and training time relative to the FFN with the same skip "
             f"setting. `timed` is the number of independent clocks behind our column.", "",
             f"| Model | thesis train ({ref_unit}) | thesis / FFN | ours train (ms) | ours / FFN | timed "
             "| thesis validate (ms) | ours validate (ms) |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in exp.results["variants"]:
        suffix = "-skip" if v["skip"] else ""
        ref = reference.get(v["variant"], {})
        timed = exp.independent(v["variant"])
        ours = _shared_clock(stat_of(exp.timing(v["variant"])), timed) or {}
        val = _shared_clock(stat_of(exp.timing(v["variant"], "val_ms_per_epoch")), timed)
        ours_ratio = ratio(ours.get("mean"), ffn_ours.get(suffix)) if timed >= 2 else "—"
        lines.append(f"| {v['label']} | {ref.get(ref_key) or '—'} | {ratio(thesis_mean(ref.get(ref_key)), ffn_ref.get(suffix))} "
                     f"| {cell(ours, 2)} | {ours_ratio} | {timed} "
                     f"| {ref.get('val_ms') or '—'} | {cell(val, 2)} |")
    return "\n".join(lines)


def _shared_clock(stat: dict | None, timed: int) -> dict | None:
    """Seeds timed by one clock (a batched call) give one measurement: no sd."""
    return stat if stat is None or timed >= 2 else {**stat, "sd": None, "n": 1}


def equal_time(exp: Exp) -> tuple[float, dict[str, float], dict[str, dict[int, float]]] | None:
    """(budget T, mean training time per variant, seed -> the best validation metric each run had
    reached within T): T is the shortest mean training time of any variant (epochs x its seconds per
    epoch); the thesis's time-weighted curves (Sec. 4.5, App. D) compared at one time."""
    key = "val_accuracy" if exp.classification else "val_loss"
    totals = {}
    for variant, seeds in exp.curves.items():
        t = [len(c.get(key) or []) * c.get("train_seconds_per_epoch", 0.0) for c in seeds.values()]
        if t and all(t):
            totals[variant] = statistics.mean(t)
    if not totals:
        return None
    budget = min(totals.values())
    best = max if exp.classification else min
    at_budget: dict[str, dict[int, float]] = {}
    for variant, seeds in exp.curves.items():
        for seed, c in seeds.items():
            values = [x for x in (c.get(key) or []) if x is not None]
            epochs = int(budget // c["train_seconds_per_epoch"]) if c.get("train_seconds_per_epoch") else 0
            if values and epochs >= 1:
                at_budget.setdefault(variant, {})[int(seed)] = best(values[:epochs])
    return budget, totals, at_budget


def beats_ffn_at_equal_time(exp: Exp, variant: dict, at_budget: dict[str, dict[int, float]]) -> V.Verdict | None:
    ffn = "ffn-skip" if variant["skip"] else "ffn"
    if variant["variant"] == ffn or ffn not in at_budget or variant["variant"] not in at_budget:
        return None
    claim = f"{variant['label']} beats the FFN at equal time"
    return (V.timing_measurable(claim, [exp.independent(ffn), exp.independent(variant["variant"])])
            or V.compare(claim, at_budget[ffn], at_budget[variant["variant"]], expect(exp, worse=False)))


def claim_ffn_wins_on_time(exp: Exp) -> V.Verdict | None:
    """Thesis App. D on bike: "the base model outperforms all others when time is accounted for"."""
    found = equal_time(exp)
    if found is None:
        return None
    parts = []
    for v in loop_variants(exp):
        verdict = beats_ffn_at_equal_time(exp, v, found[2])
        if verdict is not None:  # the thesis's claim is the opposite of "the loop model beats the FFN"
            flipped = {V.AGREES: V.DISAGREES, V.DISAGREES: V.AGREES}.get(verdict.outcome, verdict.outcome)
            parts.append(V.Verdict(f"FFN beats {v['label']}", flipped, verdict.evidence))
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: at equal training time the FFN beats every loop model", parts)


def time_weighted_table(exp: Exp) -> str:
    """Validation metric at equal training time (thesis Sec. 4.5 / App. D)."""
    found = equal_time(exp)
    if found is None:
        return ""
    budget, totals, at_budget = found
    shared = [v["label"] for v in exp.results["variants"] if exp.independent(v["variant"]) < 2]
    caveat = (f" The per-epoch times of {len(shared)} of the {len(exp.results['variants'])} variants come from one clock "
              "shared by several models trained in one batched call, so their time axis is the group's, not one "
              "model's: read those rows with care." if shared else "")
    lines = [f"Time-weighted convergence (thesis Sec. 4.5, App. D): validation {exp.metric} at equal training time, "
             f"the best each run reached within {budget:.2f} s of training (the shortest variant's mean), mean ± sd; "
             f"paired with the FFN of the same skip setting ({'higher' if exp.classification else 'lower'} is "
             f"better).{caveat}", "",
             "| Model | mean training time (s) | at equal time | claim: beats the FFN at equal time |", "|:---|---:|---:|:---|"]
    for v in exp.results["variants"]:
        name = v["variant"]
        if name not in at_budget:
            continue
        verdict = beats_ffn_at_equal_time(exp, v, at_budget)
        vs = "—" if verdict is None else f"{verdict.outcome} ({verdict.evidence})"
        lines.append(f"| {v['label']} | {totals.get(name, 0.0):.2f} | {cell(stat_of(at_budget[name]))} | {vs} |")
    return "\n".join(lines)


def _seeds(exp: Exp) -> str:
    seeds = sorted({s for v in exp.runs.values() for s in v})
    return f"{len(seeds)} seeds"


# --- claims (verdicts) -------------------------------------------------------------------------------

def loop_variants(exp: Exp) -> list[dict]:
    return [v for v in exp.results["variants"] if v["method"] != "ffn"]


def expect(exp: Exp, worse: bool) -> str:
    """The direction of 'worse' (or 'better') in this experiment's metric."""
    return ("lower" if worse else "higher") if exp.higher_is_better else ("higher" if worse else "lower")


def claim_feedback_off(exp: Exp) -> V.Verdict:
    parts = [V.compare(f"{v['label']}", exp.values(v["variant"]), exp.values(v["variant"], "feedback_off"),
                       expect(exp, worse=True), floor=exp.floor(v["variant"])) for v in loop_variants(exp)]
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: feedback off makes every loop variant worse", parts)


def claim_skip_vs_feedback(exp: Exp) -> V.Verdict | None:
    both = [v for v in loop_variants(exp) if v["skip"]]
    if not both:
        return None
    parts = [V.compare(f"{v['label']}", exp.values(v["variant"], "feedback_off"), exp.values(v["variant"], "skip_off"),
                       expect(exp, worse=False), floor=exp.floor(v["variant"])) for v in both]
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: skip off costs less than feedback off", parts)


def claim_combine_keeps_more(exp: Exp) -> V.Verdict | None:
    parts = []
    for v in loop_variants(exp):
        if v["method"] != "combine":
            continue
        twin = v["variant"].replace("combine", "couple")
        if exp.variant(twin) is None:
            continue
        parts.append(V.compare(f"{v['label']} vs {exp.variant(twin)['label']}", exp.values(twin, "feedback_off"),
                               exp.values(v["variant"], "feedback_off"), expect(exp, worse=False), floor=exp.floor(v["variant"])))
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: with feedback off COMBINE keeps more than COUPLE", parts) if parts else None


def claim_combine_weaker(exp: Exp) -> V.Verdict | None:
    parts = []
    for v in loop_variants(exp):
        twin = v["variant"].replace("combine", "couple")
        if v["method"] == "combine" and exp.variant(twin) is not None:
            parts.append(V.compare(f"{v['label']} vs {exp.variant(twin)['label']}", exp.values(twin), exp.values(v["variant"]),
                                   expect(exp, worse=True), floor=exp.floor(twin)))
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: COMBINE is worse than COUPLE of the same depth", parts) if parts else None


def claim_couple_cost_grows(exp: Exp) -> V.Verdict | None:
    parts = []
    for skip in ("", "-skip"):
        chain = [n for n in ("ffn", "couple-x2", "couple-x3", "couple-x4") if exp.variant(n.replace("ffn", "ffn") + skip)]
        for a, b in zip(chain, chain[1:]):
            name_a, name_b = a + skip, b + skip
            claim = f"{exp.variant(name_b)['label']} slower than {exp.variant(name_a)['label']}"
            parts.append(V.timing_measurable(claim, [exp.independent(name_a), exp.independent(name_b)])
                         or V.compare(claim, exp.timing(name_a), exp.timing(name_b), "higher"))
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: each extra COUPLE pass costs training time", parts) if parts else None


def claim_addition(exp: Exp, plain: Exp, what: str) -> V.Verdict:
    parts = []
    for v in exp.results["variants"]:
        if plain.variant(v["variant"]) is None:
            continue
        parts.append(V.compare(f"{v['label']}", plain.values(v["variant"]), exp.values(v["variant"]),
                               expect(exp, worse=False), floor=plain.floor(v["variant"])))
    return V.all_of(f"{EXPERIMENTS[exp.name][0]}: {what} is better than the plain loop (same seeds)", parts)


# --- the page ---------------------------------------------------------------------------------------

class Recorder:
    """Jinja2's finalize: records the numbers of every value the template prints."""

    def __init__(self) -> None:
        self.numbers: set[str] = set()

    def __call__(self, value):
        text = "" if value is None else str(value)
        self.numbers.update(m.group().lstrip("+") for m in NUMBER.finditer(text))
        return text


def context(exps: dict[str, Exp], reference: dict) -> dict:
    """The template's fields: numbers computed from the results and the transcribed tables."""
    c: dict = {"settings": reference.get("settings", {}), "level": f"{V.LEVEL:.0%}",
               "present": [n for n in EXPERIMENTS if n in exps],
               "missing": [(n, produce_command(n)) for n in EXPERIMENTS if n not in exps]}
    c["walls"] = [(config_name(n), sum(len(s) for s in e.runs.values()), f"{e.wall_minutes():.1f}",
                   f"{max(e.together(), default=1)}", f"{max(e.loads(), default=0.0):.1f}", e.threads(), _seeds(e))
                  for n, e in exps.items()]

    iris_ref = reference.get("lavik-iris", {})
    loops = [k for k in iris_ref if not k.startswith("ffn")]
    c["thesis_iris_loop_mean"] = f"{statistics.mean(thesis_mean(iris_ref[k]['accuracy']) for k in loops):.3f}"
    c["thesis_iris_fb_mean"] = f"{statistics.mean(thesis_mean(iris_ref[k]['feedback_off_accuracy']) for k in loops):.3f}"
    c["thesis_iris_loops"] = str(len(loops))
    cx2 = iris_ref.get("combine-x2-skip", {})
    c["thesis_iris_cx2"] = (cx2.get("accuracy"), cx2.get("skip_off_accuracy"),
                            f"{1 - thesis_mean(cx2['skip_off_accuracy']) / thesis_mean(cx2['accuracy']):.1%}")
    bike_ref = reference.get("lavik-bike", {})
    combine_bike = [thesis_mean(v["loss"]) for k, v in bike_ref.items() if k.startswith("combine")]
    other_bike = [thesis_mean(v["loss"]) for k, v in bike_ref.items() if not k.startswith("combine")]
    c["thesis_bike_combine"] = f"{min(combine_bike):.1f}-{max(combine_bike):.1f}"
    c["thesis_bike_other"] = f"{min(other_bike):.1f}-{max(other_bike):.1f}"
    d = reference.get("lavik-meats-dense-classification", {}).get("couple-x2-skip", {})
    c["thesis_83"] = (d.get("loss"), d.get("skip_off_loss"),
                      f"{thesis_mean(d['skip_off_loss']) / thesis_mean(d['loss']) - 1:+.1%}")

    if "lavik-iris" in exps:
        e = exps["lavik-iris"]
        pairs = [(mean(e, v["variant"]), mean(e, v["variant"], "feedback_off")) for v in loop_variants(e)]
        pairs = [p for p in pairs if None not in p]
        cx2 = (mean(e, "combine-x2-skip"), mean(e, "combine-x2-skip", "skip_off"))
        if pairs and None not in cx2:
            c["iris"] = {"loop_mean": f"{statistics.mean(p[0] for p in pairs):.3f}",
                         "fb_mean": f"{statistics.mean(p[1] for p in pairs):.3f}", "loops": str(len(pairs)),
                         "n_val": str(e.data.get("n_val", "—")),
                         "one_sample": f"{e.data.get('one_sample_accuracy', float('nan')):.3f}",
                         "cx2": (f"{cx2[0]:.2f}", f"{cx2[1]:.2f}", f"{1 - cx2[1] / cx2[0]:.1%}")}
    ratios = []
    for name in REGRESSION:
        if name in exps:
            e = exps[name]
            r = [b / a for v in loop_variants(e)
                 if None not in (a := mean(e, v["variant"]), b := mean(e, v["variant"], "feedback_off"))]
            if r:
                ratios.append((EXPERIMENTS[name][0], f"{min(r):.2f}", f"{max(r):.2f}"))
    c["fb_ratios"] = ratios
    skip_changes = []
    for name in ("lavik-meats-dense-classification", "lavik-meats-conv-classification"):
        if name in exps:
            e = exps[name]
            ch = [(abs(b - a), v["label"]) for v in e.results["variants"] if v["skip"]
                  if None not in (a := mean(e, v["variant"]), b := mean(e, v["variant"], "skip_off"))]
            ref = [v for v in reference.get(name, {}).values() if "skip_off_accuracy" in v]
            raised = sum(thesis_mean(v["skip_off_accuracy"]) > thesis_mean(v["accuracy"]) for v in ref)
            ours_raised = sum(1 for v in e.results["variants"] if v["skip"]
                              if None not in (a := mean(e, v["variant"]), b := mean(e, v["variant"], "skip_off")) and b > a)
            if ch:
                big = max(ch)
                skip_changes.append((EXPERIMENTS[name][0], f"{big[0]:.3f}", big[1], f"{ours_raised}", f"{len(ch)}",
                                     f"{raised}", f"{len(ref)}"))
    c["skip_changes"] = skip_changes
    if "lavik-meats-dense-classification" in exps:
        e = exps["lavik-meats-dense-classification"]
        o, s = e.values("couple-x2-skip", metric="loss"), e.values("couple-x2-skip", "skip_off", "loss")
        if o and s:
            c["ours_83"] = (f"{stat_of(o)['mean']:.4f}", f"{stat_of(s)['mean']:.4f}",
                            f"{stat_of(s)['mean'] / stat_of(o)['mean'] - 1:+.1%}",
                            V.compare("skip off lowers the loss of COUPLE x2 w. skip", o, s, "lower").markdown())
    if "lavik-mnist-tiny-cnn" in exps:
        e = exps["lavik-mnist-tiny-cnn"]
        ref = reference["lavik-mnist-tiny-cnn"]
        rows = []
        for name in ("ffn", "combine-x2", "combine-x3", "couple-x2", "couple-x3"):
            o, f = stat_of(e.values(name)), stat_of(e.values(name, "feedback_off"))
            rows.append((e.variant(name)["label"] if e.variant(name) else name, ref[name]["accuracy"],
                         ref[name].get("feedback_off_accuracy", "—"), f"{o['mean']:.3f}" if o else "—",
                         f"{f['mean']:.3f}" if f else "—"))
        drops = {}
        for name in ("couple-x2", "couple-x3"):
            theirs = thesis_mean(ref[name]["accuracy"]) - thesis_mean(ref[name]["feedback_off_accuracy"])
            o, f = mean(e, name), mean(e, name, "feedback_off")
            drops[name] = (f"{theirs:.3f}", "—" if None in (o, f) else f"{o - f:.3f}")
        c["mnist"] = {"rows": rows, "n_train": f"{e.data.get('n_train', 0):,}", "drops": drops,
                      "neurons_train": f"{reference['settings']['neurons_mnist_train_images']:,}",
                      "factor": f"{reference['settings']['neurons_mnist_train_images'] / e.data['n_train']:.0f}"
                      if e.data.get("n_train") else "—"}

    claims = {"feedback_off": [], "skip_vs_feedback": [], "combine_keeps_more": [], "combine_weaker": [],
              "couple_cost": [], "additions": [], "time_weighted": []}
    for name, e in exps.items():
        if name in TIMING_ONLY or name in ADDITIONS:
            if name in TIMING_ONLY:
                claims["couple_cost"].append(claim_couple_cost_grows(e))
            continue
        claims["feedback_off"].append(claim_feedback_off(e))
        claims["skip_vs_feedback"].append(claim_skip_vs_feedback(e))
        claims["combine_keeps_more"].append(claim_combine_keeps_more(e))
        if name in REGRESSION:
            claims["combine_weaker"].append(claim_combine_weaker(e))
        if name == "lavik-bike":
            claims["time_weighted"].append(claim_ffn_wins_on_time(e))
        claims["couple_cost"].append(claim_couple_cost_grows(e))
    for name, (plain, what) in ADDITIONS.items():
        if name in exps and plain in exps:
            claims["additions"].append(claim_addition(exps[name], exps[plain], what))
    c["claims"] = {k: [v.markdown() for v in vs if v is not None] for k, vs in claims.items()}

    sections = []
    for name, (title, tables) in EXPERIMENTS.items():
        if name not in exps:
            sections.append({"title": title, "missing": config_name(name), "name": name})
            continue
        e = exps[name]
        ref = reference.get(name, {})
        sections.append({"title": title, "missing": None, "config": config_name(name), "tables": tables, "status": e.results["status"],
                         "minutes": f"{e.wall_minutes():.1f}", "seeds": _seeds(e),
                         "data": _data_line(e),
                         "probes": "" if name in TIMING_ONLY else probe_table(e, ref),
                         "timing": timing_table(e, ref), "weighted": time_weighted_table(e)})
    c["sections"] = sections
    return c


def _data_line(e: Exp) -> str:
    d = e.data
    if e.classification and d.get("n_val"):
        return (f"Validation set: {d['n_val']} samples, so one sample is {d['one_sample_accuracy']:.3f} accuracy; "
                f"chance {d['chance_accuracy']:.3f} (majority class {d['majority_accuracy']:.3f})")
    if d.get("mean_predictor_rmse") is not None:
        return f"Validation set: {d['n_val']} samples; predicting their mean gives RMSE {d['mean_predictor_rmse']:.3f}"
    return ""


def render(results_dir: Path) -> tuple[str, set[str]]:
    """(the page, the numbers the template printed through its fields)."""
    reference = tomllib.loads((HERE / "lavik-thesis.toml").read_text())
    exps = {n: e for n in EXPERIMENTS if (e := load(results_dir, n)) is not None}
    recorder = Recorder()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), finalize=recorder, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    text = env.get_template("lavik.md.j2").render(**context(exps, reference))
    return text, recorder.numbers


def build(results_dir: Path, out: Path) -> str:
    text, _ = render(Path(results_dir))
    Path(out).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", "--results-dir", dest="results_dir", type=Path, default=RESULTS,
                        help="committed results (default docs/reproductions/results) or a runs folder")
    parser.add_argument("--out", type=Path, default=HERE / "lavik.md")
    args = parser.parse_args(argv)
    build(args.results_dir, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
