"""Build docs/reproductions/hershey.md: Hershey's (2023) iterative-network claims beside what our runs show.

    python docs/reproductions/collect.py runs hershey-<name>   # after `loopnets run configs/hershey/<name>.toml`
    python docs/reproductions/build_hershey.py                 # or `make pages`: every page, offline

Reads the committed results (docs/reproductions/results/hershey-*/, written by collect.py) or, with
--runs-dir, run folders; the thesis's claims and numbers, and our numbers from before issue 17, from
hershey-thesis.toml (transcribed, each with its source); the prose from hershey.md.j2. Every number the
template prints passes through a template field (build_lavik's Recorder), so tests/test_pages.py can
tell computed numbers from typed ones. Each claim is a rule on verdicts.py: paired over seeds (the
number stated), floored at the data's chance level (data.json), a compound claim judged part by part;
an experiment not committed yet leaves its claims "not run yet" with the command that produces it.

Measures (per seed, final epoch):
  val   = validation accuracy: ACC_end (the anomaly's position among L) for the anomaly tasks;
  test  = the same on the test split (summary extra.test);
  early = mean validation accuracy over the first quarter of the epochs (curves.json);
  early half / late half = mean test accuracy over the anomalies in the first / last half of the
          positions (summary extra.test.accuracy_by_position; L = 9: positions 1-4 vs 5-9);
  a diverged run (nan loss) counts at the chance level: it "fails to train" (E5).
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
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import verdicts as V  # noqa: E402  (beside this script)
from lavik_results import Exp, stat_of  # noqa: E402
from page_tools import builder_main, load_experiments, render_template, write_page  # noqa: E402

from loopnets.models.inn import lstm_parameters  # noqa: E402
from loopnets.models.inn.schema import INPUTS  # noqa: E402

RESULTS = HERE / "results"
CONFIGS = ("structure", "anomaly-uniform", "anomaly-uniform-19", "anomaly-random", "anomaly-random-19",
           "density-fixed-dims", "density-fixed-weights", "lr-stability", "difficulty", "difficulty-uniform",
           "difficulty-mnist", "iterations", "fixed-point", "fixed-point-mlp")
NEAR = 0.05  # "train the same", "even", "on par", "marginal", "about X %": within 5 accuracy points
FAILS = 0.04  # "fails to train": the whole interval of (accuracy - chance) below 4 points


def config_name(config: str) -> str:
    return f"configs/hershey/{config}.toml"


def experiment_name(config: str) -> str:
    return tomllib.loads((ROOT / config_name(config)).read_text())["name"]


def produce_command(config: str) -> str:
    return (f"loopnets run {config_name(config)} --workers 2 && python docs/reproductions/collect.py runs "
            f"{experiment_name(config)}")


# --- per-seed measures ------------------------------------------------------------------------------

def val(e: Exp, variant: str, diverged_at_chance: bool = False) -> dict[int, float]:
    """seed -> final validation accuracy (ACC_end); a diverged run at the chance level if asked."""
    out = e.values(variant)
    if diverged_at_chance:
        out |= {seed: e.chance for seed, s in e.runs.get(variant, {}).items() if s.get("status") == "diverged"}
    return out


def test(e: Exp, variant: str) -> dict[int, float]:
    return {seed: float(s["extra"]["test"]["accuracy"]) for seed, s in e.runs.get(variant, {}).items()
            if s.get("status") == "finished" and ((s.get("extra") or {}).get("test") or {}).get("accuracy") is not None}


def early(e: Exp, variant: str) -> dict[int, float]:
    """seed -> mean validation accuracy over the first quarter of the epochs."""
    out = {}
    for seed, curve in (e.curves.get(variant) or {}).items():
        acc = [x for x in curve.get("val_accuracy") or [] if x is not None]
        if acc and int(seed) in e.values(variant):
            out[int(seed)] = statistics.mean(acc[:max(1, len(acc) // 4)])
    return out


def at_epoch(e: Exp, variant: str, fraction: float) -> tuple[int, dict[int, float]]:
    """(epoch, seed -> validation accuracy at that epoch): the epoch `fraction` of the way through training."""
    curves = {int(s): c.get("val_accuracy") or [] for s, c in (e.curves.get(variant) or {}).items()}
    length = min((len(c) for c in curves.values()), default=0)
    epoch = max(1, round(fraction * length))
    return epoch, {s: c[epoch - 1] for s, c in curves.items() if len(c) >= epoch and c[epoch - 1] is not None}


def positions(e: Exp, variant: str) -> dict[int, list[float | None]]:
    """seed -> test accuracy per anomaly position (None: no test sequence had its anomaly there)."""
    return {seed: s["extra"]["test"]["accuracy_by_position"] for seed, s in e.runs.get(variant, {}).items()
            if s.get("status") == "finished" and (s.get("extra") or {}).get("test", {}).get("accuracy_by_position")}


def halves(e: Exp, variant: str) -> tuple[dict[int, float], dict[int, float]]:
    """(early half, late half): seed -> mean test accuracy over the first L // 2 positions / the rest."""
    first, last = {}, {}
    for seed, acc in positions(e, variant).items():
        half = len(acc) // 2
        a, b = [x for x in acc[:half] if x is not None], [x for x in acc[half:] if x is not None]
        if a and b:
            first[seed], last[seed] = statistics.mean(a), statistics.mean(b)
    return first, last


def chance_of(e: Exp, values: dict[int, float]) -> dict[int, float]:
    return {s: e.chance for s in values}


def floor(e: Exp, values: dict[int, float]) -> tuple[dict[int, float], float, bool]:
    return values, e.chance, True


def variants(e: Exp) -> list[dict]:
    return e.results["variants"]


def summaries(e: Exp, variant: str) -> list[dict]:
    return list(e.runs.get(variant, {}).values())


def key(e: Exp, variant: str, name: str):
    """A variant's setting (density, trainable, lr, ...) from its first run's summary."""
    return next((s.get(name) for s in summaries(e, variant)), None)


# --- formatting ---------------------------------------------------------------------------------------

def pct(values: dict[int, float]) -> str:
    """Mean ± sd over seeds, in %, with n; n/a for one seed."""
    st = stat_of(values)
    if st is None:
        return "—"
    sd = f"{100 * st['sd']:.1f}" if st["sd"] is not None else "n/a"
    return f"{100 * st['mean']:.1f} ± {sd} % (n = {st['n']})"


def mean_pct(values: dict[int, float]) -> str:
    return f"{100 * statistics.mean(values.values()):.1f}" if values else "—"


def count(values: list[int]) -> str:
    """A trainable count over seeds (random masks differ per seed): the mean, with the range if it varies."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{round(statistics.mean(values)):,} ({low:,}-{high:,})"


def status(e: Exp, variant: str) -> str:
    states = [s.get("status", "?") for s in summaries(e, variant)]
    return ", ".join(f"{states.count(x)} {x}" for x in sorted(set(states)))


# --- the rules ------------------------------------------------------------------------------------------
# Each takes ({config: Exp}, the claim's table from hershey-thesis.toml) and returns (our numbers, Verdict),
# or None when an experiment it needs is not committed.

def trains(claim: str, e: Exp, values: dict[int, float], expect: bool) -> V.Verdict:
    """"trains" (above chance beyond noise) or "fails to train" (the whole interval of accuracy - chance
    below FAILS), as `expect` says; inconclusive in between or with fewer than two seeds."""
    iv = V.paired(chance_of(e, values), values)
    if iv is None:
        return V.Verdict(claim, V.INCONCLUSIVE, f"{len(values)} seed(s): no noise estimate")
    above, at = iv.low > 0, iv.high < FAILS
    state = "trains" if above and not at else "fails" if at and not above else None
    outcome = V.INCONCLUSIVE if state is None else V.AGREES if (state == "trains") == expect else V.DISAGREES
    return V.Verdict(claim, outcome, f"accuracy - chance {iv.text()}; trains: interval above 0, fails: below "
                                     f"{FAILS:.2f}")


def near(claim: str, e: Exp, a: dict[int, float], b: dict[int, float], floor_values: dict[int, float]) -> V.Verdict:
    """a and b within ±NEAR of each other (paired), floored on `floor_values` above chance."""
    return V.at_most(claim, a, b, NEAR, two_sided=True, floor=floor(e, floor_values), digits=3)


def above(claim: str, e: Exp, low: dict[int, float], high: dict[int, float]) -> V.Verdict:
    """"high above low", floored on `high` above chance."""
    return V.compare(claim, low, high, "higher", floor=floor(e, high))


def reaches(claim: str, values: dict[int, float], level: float) -> V.Verdict:
    """"reaches about `level`": above level - NEAR beyond noise. No chance floor: the level lies above
    chance, so a model at chance is judged on the same interval (and does not reach it)."""
    return V.compare(claim, {s: level - NEAR for s in values}, values, "higher")


def rule_structure(x, claim):
    e = x["structure"]
    ref = "inn-p0"
    exchanged = [v["variant"] for v in variants(e) if v["variant"] != ref]
    ours = "; ".join(f"{v}: test {pct(test(e, v))}, early val {pct(early(e, v))}" for v in [ref, *exchanged])
    parts = []
    for v in exchanged:
        parts.append(near(f"{v} vs layered: final test accuracy within ±{NEAR:.2f}", e, test(e, v), test(e, ref), test(e, v)))
        parts.append(near(f"{v} vs layered: early validation accuracy within ±{NEAR:.2f}", e, early(e, v), early(e, ref),
                          val(e, v)))
    return ours, V.all_of("the exchanged structures train as the layered MLP does", parts)


def rule_structure_level(x, claim):
    e = x["structure"]
    ours = "; ".join(f"{v['variant']}: {pct(test(e, v['variant']))}" for v in variants(e))
    return ours, V.all_of(f"every structure reaches {claim['level']:.1%} (test accuracy above {claim['level'] - NEAR:.3f})",
                          [reaches(v["variant"], test(e, v["variant"]), claim["level"]) for v in variants(e)])


def inn_lstm(e: Exp) -> str:
    return f"val ACC_end: INN {pct(val(e, 'inn'))}, LSTM {pct(val(e, 'lstm'))} (chance {e.chance:.3f})"


def half_text(e: Exp, variant: str) -> str:
    first, last = halves(e, variant)
    return f"{variant} early half {pct(first)}, late half {pct(last)}"


def rule_inn_above_lstm(x, claim):
    e = x[claim["config"]]
    return inn_lstm(e), above("the INN's ACC_end above the LSTM's", e, val(e, "lstm"), val(e, "inn"))


def rule_inn_above_lstm_and_positions(x, claim):
    e = x[claim["config"]]
    (inn_first, inn_last), (lstm_first, lstm_last) = halves(e, "inn"), halves(e, "lstm")
    ours = f"{inn_lstm(e)}; test accuracy by position: {half_text(e, 'inn')}; {half_text(e, 'lstm')}"
    return ours, V.all_of("INN above the LSTM; LSTM recency bias; INN even across positions", [
        above("the INN's ACC_end above the LSTM's", e, val(e, "lstm"), val(e, "inn")),
        above("LSTM recency bias: its late-half accuracy above its early-half", e, lstm_first, lstm_last),
        near(f"INN even: its late half within ±{NEAR:.2f} of its early half", e, inn_last, inn_first, val(e, "inn"))])


def rule_random_below_uniform(x, claim):
    e = x[claim["config"]]
    parts = [above("the INN's final ACC_end above the LSTM's", e, val(e, "lstm"), val(e, "inn"))]
    stages = []
    for fraction in (0.25, 0.5, 0.75):
        epoch, inn = at_epoch(e, "inn", fraction)
        _, lstm = at_epoch(e, "lstm", fraction)
        stages.append(f"epoch {epoch}: INN {pct(inn)}, LSTM {pct(lstm)}")
        parts.append(above(f"at epoch {epoch} ({fraction:.0%} of training) the INN above the LSTM", e, lstm, inn))
    ours = f"{inn_lstm(e)}; {'; '.join(stages)}"
    u = x.get(claim["uniform"])
    for model in ("inn", "lstm"):
        name = f"{model.upper()} on random below {model.upper()} on uniform (paired by seed number, independent runs)"
        if u is None:
            parts.append(V.Verdict(name, V.INCONCLUSIVE, f"{claim['uniform']} not run yet"))
        else:
            parts.append(V.compare(name, val(u, model), val(e, model), "lower", floor=floor(u, val(u, model))))
    if u is not None:
        ours += f"; uniform: INN {pct(val(u, 'inn'))}, LSTM {pct(val(u, 'lstm'))}"
    return ours, V.all_of("both lower than on uniform; the INN above the LSTM at every stage", parts)


def rule_random_19(x, claim):
    e = x[claim["config"]]
    lstm_first, _ = halves(e, "lstm")
    ours = f"{inn_lstm(e)}; {half_text(e, 'lstm')}"
    parts = [above("the INN's ACC_end above the LSTM's", e, val(e, "lstm"), val(e, "inn"))]
    short = x.get(claim["shorter"])
    on_par = f"the INN at L = {e.data.get('length', '?')} on par with L = 9 (within ±{NEAR:.2f}, paired by seed number)"
    if short is None:
        parts.append(V.Verdict(on_par, V.INCONCLUSIVE, f"{claim['shorter']} not run yet"))
    else:
        parts.append(near(on_par, e, val(e, "inn"), val(short, "inn"), val(e, "inn")))
        ours += f"; INN at L = {short.data.get('length', '?')}: {pct(val(short, 'inn'))}"
    parts.append(V.at_most(f"the LSTM guesses on early anomalies: its early-half accuracy within {NEAR:.2f} of chance",
                           lstm_first, chance_of(e, lstm_first), NEAR, digits=3))
    return ours, V.all_of("the INN above the LSTM and on par with L = 9; the LSTM at chance on early anomalies", parts)


def by_density(e: Exp, budget: int | None = None) -> dict[float, str]:
    """density -> variant name (INN variants; at one trainable budget if given)."""
    return {key(e, v["variant"], "density"): v["variant"] for v in variants(e)
            if key(e, v["variant"], "model") == "inn" and (budget is None or key(e, v["variant"], "trainable") == budget)}


def rule_fixed_dims(x, claim):
    e = x[claim["config"]]
    dens = by_density(e)
    full = dens.get(1.0)
    ours = "; ".join(f"R = {d:g}: {pct(val(e, v))}" for d, v in sorted(dens.items(), reverse=True))
    ours += f"; LSTM: {pct(val(e, 'lstm'))} (chance {e.chance:.3f})"
    parts = [V.at_most(f"R = {d:g} declines from R = 1 by less than {NEAR:.2f}", val(e, full), val(e, v), NEAR,
                       floor=floor(e, val(e, v)), digits=3)
             for d, v in sorted(dens.items(), reverse=True) if full and d < 1.0]
    parts += [above(f"R = {d:g} above the LSTM", e, val(e, "lstm"), val(e, v)) for d, v in sorted(dens.items(), reverse=True)]
    return ours, V.all_of("only a marginal decline as R falls; every INN above the LSTM", parts)


def rule_fixed_dims_level(x, claim):
    e = x[claim["config"]]
    v = by_density(e).get(claim["density"])
    if v is None:
        return None
    return f"R = {claim['density']:g}: {pct(val(e, v))}", reaches(
        f"R = {claim['density']:g} reaches about {claim['level']:.0%} (above {claim['level'] - NEAR:.2f})",
        val(e, v), claim["level"])


def budgets(e: Exp) -> list[int]:
    return sorted({key(e, v["variant"], "trainable") for v in variants(e)}, reverse=True)


def best_of(e: Exp, dens: dict[float, str]) -> str | None:
    scored = {v: statistics.mean(val(e, v).values()) for v in dens.values() if val(e, v)}
    return max(scored, key=scored.get) if scored else None


def rule_fixed_weights(x, claim):
    e = x[claim["config"]]
    low, high = claim["band"]
    parts, texts = [], []
    for w in budgets(e):
        dens = by_density(e, w)
        best = best_of(e, {d: v for d, v in dens.items() if low <= d <= high})
        texts.append(f"{w:,}: " + ", ".join(f"R = {d:g} {mean_pct(val(e, v))}" for d, v in sorted(dens.items())))
        if best is None:
            continue
        best_r = key(e, best, "density")
        parts += [above(f"at {w:,}: the band's best (R = {best_r:g}) above R = {d:g}", e, val(e, v), val(e, best))
                  for d, v in sorted(dens.items()) if not low <= d <= high]
    ours = f"mean val ACC_end %: {'; '.join(texts)} (chance {e.chance:.3f})"
    return ours, V.all_of(f"R in [{low:g}, {high:g}] best at every budget (R = 1 below it)", parts)


def rule_fixed_weights_level(x, claim):
    e = x[claim["config"]]
    best = best_of(e, by_density(e, claim["budget"]))
    if best is None:
        return None
    return (f"best at {claim['budget']:,}: R = {key(e, best, 'density'):g}, {pct(val(e, best))}",
            reaches(f"the best INN at {claim['budget']:,} reaches about {claim['level']:.0%}", val(e, best), claim["level"]))


def lr_grid(e: Exp) -> dict[tuple[float, float], str]:
    return {(key(e, v["variant"], "density"), key(e, v["variant"], "lr")): v["variant"] for v in variants(e)}


def rule_lr_stability(x, claim):
    e = x[claim["config"]]
    grid = lr_grid(e)
    rate, limit = claim["fails_above"]
    parts = [trains(f"lr {lr:g}, R = {d:g} fails to train", e, val(e, v, diverged_at_chance=True), expect=False)
             for (d, lr), v in sorted(grid.items(), reverse=True) if lr == rate and d > limit]
    for high in claim["high_rates"]:
        parts += [V.Verdict(f"lr {high:g}, R = {d:g} trains", V.INCONCLUSIVE, "no run of this variant")
                  for d in claim["only_train"] if (d, high) not in grid]
        for (d, lr), v in sorted(grid.items()):
            if lr == high:
                expect = d in claim["only_train"]
                parts.append(trains(f"lr {lr:g}, R = {d:g} {'trains' if expect else 'fails to train'}", e,
                                    val(e, v, diverged_at_chance=True), expect))
    diverged = sum(s.get("status") == "diverged" for seeds in e.runs.values() for s in seeds.values())
    ours = f"grid below; {diverged} diverged run(s), counted at chance (chance {e.chance:.3f})"
    return ours, V.all_of(f"at lr {rate:g} R > {limit:g} fails; at the highest rates only R = "
                          f"{' and '.join(f'{d:g}' for d in claim['only_train'])} train", parts)


def rule_difficulty(x, claim):
    e = x[claim["config"]]
    by_w = {key(e, v["variant"], "trainable"): v["variant"] for v in variants(e)}
    means = {w: statistics.mean(val(e, v).values()) for w, v in sorted(by_w.items()) if val(e, v)}
    if claim["budget"] not in by_w or not means:
        return None
    reached = [w for w, a in means.items() if a >= claim["target"]]
    ours = (f"mean val accuracy by budget: {', '.join(f'{w:,}: {100 * a:.1f} %' for w, a in means.items())}; the smallest "
            f"budget whose mean reaches {claim['target']:.0%}: {f'{reached[0]:,}' if reached else 'none of the grid'}; "
            f"chance {e.chance:.3f}")
    return ours, reaches(f"at {claim['budget']:,} weights the INN reaches about {claim['target']:.0%}",
                         val(e, by_w[claim["budget"]]), claim["target"])


def rule_iterations(x, claim):
    e = x[claim["config"]]
    by_t = {key(e, v["variant"], "iterations"): v["variant"] for v in variants(e)}
    if 1 not in by_t or 2 not in by_t:
        return None
    ours = "; ".join(f"T = {t}: {pct(val(e, v))}" for t, v in sorted(by_t.items())) + f" (chance {e.chance:.3f})"
    parts = [above(f"T = {t} above T = 1", e, val(e, by_t[1]), val(e, v)) for t, v in sorted(by_t.items()) if t > 1]
    parts += [near(f"T = {t} on par with T = 2 (within ±{NEAR:.2f})", e, val(e, v), val(e, by_t[2]), val(e, v))
              for t, v in sorted(by_t.items()) if t > 2]
    return ours, V.all_of("one iteration lags; from two on, similar", parts)


def by_iterations(e: Exp, variant: str) -> dict[int, dict[int, float]]:
    """iterations -> seed -> test accuracy when run that many iterations (summary extra.accuracy_by_iterations)."""
    out: dict[int, dict[int, float]] = {}
    for seed, s in e.runs.get(variant, {}).items():
        swept = (s.get("extra") or {}).get("accuracy_by_iterations") if s.get("status") == "finished" else None
        for t, a in zip((swept or {}).get("iterations", []), (swept or {}).get("test", [])):
            out.setdefault(int(t), {})[seed] = float(a)
    return out


def rule_fixed_point(x, claim):
    e = x[claim["config"]]
    per_t = by_iterations(e, variants(e)[0]["variant"])
    trained = claim["trained"]
    if trained not in per_t:
        return None
    ours = "test accuracy by iterations: " + ", ".join(f"{t}: {mean_pct(a)} %" for t, a in sorted(per_t.items()))
    ours += f" (chance {e.chance:.3f})"
    parts = [near(f"T = {t} within ±{NEAR:.2f} of the trained T = {trained}", e, a, per_t[trained], per_t[trained])
             for t, a in sorted(per_t.items()) if t > trained]
    text = f"the fixed point holds beyond {trained} iterations"
    if "layers" in claim:
        parts += [V.at_most(f"T = {t}, fewer iterations than its {claim['layers']} layers: within {NEAR:.2f} of chance",
                            a, chance_of(e, a), NEAR, digits=3) for t, a in sorted(per_t.items()) if t < claim["layers"]]
        text += "; at chance below one iteration per layer"
    return ours, V.all_of(text, parts)


RULES = {"structure": rule_structure, "structure_level": rule_structure_level, "inn_above_lstm": rule_inn_above_lstm,
         "inn_above_lstm_and_positions": rule_inn_above_lstm_and_positions,
         "random_below_uniform": rule_random_below_uniform, "random_19": rule_random_19,
         "fixed_dims": rule_fixed_dims, "fixed_dims_level": rule_fixed_dims_level, "fixed_weights": rule_fixed_weights,
         "fixed_weights_level": rule_fixed_weights_level, "lr_stability": rule_lr_stability,
         "difficulty": rule_difficulty, "iterations": rule_iterations, "fixed_point": rule_fixed_point}


# --- the page -----------------------------------------------------------------------------------------

def variant_rows(e: Exp) -> list[tuple[str, ...]]:
    """variant, trainable weights (weight-space entries), with biases (the authors' count), val, test, runs."""
    rows = []
    for v in sorted(variants(e), key=lambda v: (key(e, v["variant"], "parameters") or 0, v["variant"])):
        n = v["variant"]
        extras = [s.get("extra") or {} for s in summaries(e, n)]
        rows.append((n, count([s["parameters"] for s in summaries(e, n) if s.get("parameters") is not None]),
                     count([x["trainable_parameters"] for x in extras if x.get("trainable_parameters") is not None]),
                     pct(val(e, n)), pct(test(e, n)), status(e, n)))
    return rows


def position_rows(e: Exp) -> list[tuple[str, list[str]]]:
    rows = []
    for model in ("inn", "lstm"):
        per_seed = list(positions(e, model).values())
        if per_seed:
            cols = [[x for x in col if x is not None] for col in zip(*per_seed)]
            rows.append((model, [f"{100 * statistics.mean(c):.0f}" if c else "—" for c in cols]))
    return rows


def lr_table(e: Exp) -> dict:
    grid = lr_grid(e)
    rates = sorted({lr for _, lr in grid})
    rows = []
    for d in sorted({d for d, _ in grid}, reverse=True):
        cells = []
        for lr in rates:
            v = grid.get((d, lr))
            runs = summaries(e, v) if v else []
            div = sum(s.get("status") == "diverged" for s in runs)
            cells.append("—" if v is None else mean_pct(val(e, v)) + (f" ({div} diverged)" if div else ""))
        rows.append((f"{d:g}", cells))
    return {"rates": [f"{lr:g}" for lr in rates], "rows": rows}


def settings(e: Exp) -> tuple[str, str]:
    epochs = sorted({s.get("epochs_run") for seeds in e.runs.values() for s in seeds.values() if s.get("epochs_run")})
    seeds = sorted({s for seeds in e.runs.values() for s in seeds})
    return "/".join(str(x) for x in epochs) or "—", str(len(seeds))


def configured_epochs(config: str) -> str:
    return str(tomllib.loads((ROOT / config_name(config)).read_text())["train"]["epochs"])


def earlier_rows(exps: dict[str, Exp], earlier: dict) -> list[tuple[str, ...]]:
    """config, variant, before issue 17 (mean val %, epochs, seeds), now (mean val %, epochs, seeds)."""
    rows = []
    for config, then in earlier.items():
        if not isinstance(then, dict) or config not in exps:
            continue
        e = exps[config]
        epochs, seeds = settings(e)
        for variant, value in then["val"].items():
            rows.append((config, variant, f"{value:.1f}", str(then["epochs"]), str(then["seeds"]),
                         mean_pct(val(e, variant)), epochs, seeds))
    return rows


def fewer_threads_than_cores(e: Exp) -> bool:
    """Whether a run of `e` used fewer torch threads than the machine's cores (it shared them with another run)."""
    return any((env := s.get("environment") or {}).get("torch_threads") and env.get("cpu_count")
               and env["torch_threads"] < env["cpu_count"] for seeds in e.runs.values() for s in seeds.values())


def run_row(e: Exp) -> dict:
    epochs, seeds = settings(e)
    n = sum(len(s) for s in e.runs.values())
    done = sum(s.get("status") == "finished" for seeds_ in e.runs.values() for s in seeds_.values())
    return {"runs": f"{done} of {n}", "epochs": epochs, "seeds": seeds, "minutes": f"{e.wall_minutes():.1f}",
            "threads": e.threads(), "load": f"{max(e.loads(), default=0.0):.1f}"}


def context(exps: dict[str, Exp], thesis: dict) -> dict:
    c: dict = {"thesis": thesis["thesis"], "authors": thesis["authors"], "level": f"{V.LEVEL:.0%}",
               "near": f"{NEAR:.2f}", "fails": f"{FAILS:.2f}", "commit": thesis["earlier"]["commit"],
               "missing": [(experiment_name(k), produce_command(k)) for k in CONFIGS if k not in exps]}
    claims = []
    for claim in thesis["claim"]:
        row = {"id": claim["id"], "where": claim["where"], "thesis": claim["thesis"], "config": config_name(claim["config"]),
               "ours": None, "outcome": "not run yet", "verdict": None, "command": None}
        rule = RULES.get(claim.get("rule"))
        if claim["config"] not in exps:
            row["command"] = produce_command(claim["config"])
        elif rule is None:
            row["ours"], row["outcome"] = "committed, but this page has no rule for it yet", "not judged"
        elif (result := rule(exps, claim)) is not None:
            row["ours"], verdict = result
            row["outcome"], row["verdict"] = verdict.outcome, verdict.markdown().replace("\n", "\n  ")
        else:
            row["ours"], row["outcome"] = "the runs hold no measurement for this rule", "not judged"
        claims.append(row)
    c["claims"] = claims
    c["data"] = [(k, {"task": e.data.get("task", "—"), "n_train": f"{e.data['n_train']:,}", "n_val": f"{e.data['n_val']:,}",
                      "length": str(e.data["length"]) if "length" in e.data else "—",
                      "uniform": f"{e.data['chance_accuracy']:.3f}", "chance": f"{e.chance:.3f}",
                      "one_sample": f"{e.data['one_sample_accuracy']:.3f}",
                      "seq_floor": f"{e.data['acc_seq_floor']:.3f}" if "acc_seq_floor" in e.data else "—"})
                 for k, e in exps.items() if e.data.get("n_val")]
    c["sections"] = [{"config": config_name(k), "name": experiment_name(k), "rows": variant_rows(e),
                      "positions": position_rows(e), "grid": lr_table(e) if k == "lr-stability" else None}
                     for k, e in exps.items()]
    c["earlier"] = earlier_rows(exps, thesis["earlier"])
    c["earlier_epochs"] = [(config_name(k), str(thesis["earlier"][k]["epochs"]), configured_epochs(k))
                           for k in CONFIGS if k in thesis["earlier"]]
    c["runs"] = [(config_name(k), run_row(exps[k]) if k in exps else None) for k in CONFIGS]
    c["shared"] = [config_name(k) for k, e in exps.items() if fewer_threads_than_cores(e)]
    outputs = sorted({e.data["outputs"] for e in exps.values() if "outputs" in e.data})
    c["smallest_lstm"] = f"{lstm_parameters(outputs[0] + 1, INPUTS, outputs[0]):,}" if outputs else "more than a hundred thousand"
    return c


def load_all(results_dir: Path) -> dict[str, Exp]:
    return load_experiments(results_dir, {k: experiment_name(k) for k in CONFIGS})


def render(results_dir: Path) -> tuple[str, set[str]]:
    """(the page, the numbers the template printed through its fields)."""
    thesis = tomllib.loads((HERE / "hershey-thesis.toml").read_text())
    return render_template("hershey.md.j2", context(load_all(results_dir), thesis))


def build(results_dir: Path, out: Path) -> str:
    return write_page(render, results_dir, out)


def main(argv: list[str] | None = None) -> None:
    builder_main(render, __doc__, HERE / "hershey.md", argv)


if __name__ == "__main__":
    main()
