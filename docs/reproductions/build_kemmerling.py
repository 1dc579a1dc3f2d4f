"""Build docs/reproductions/kemmerling.md: the paper's 11 findings beside what our runs show.

    python docs/reproductions/collect.py runs kemmerling-<name>   # after `loopnets run configs/kemmerling/<name>.toml`
    python docs/reproductions/build_kemmerling.py                 # or `make pages`: every page, offline

Reads the committed results (docs/reproductions/results/kemmerling-*/, written by collect.py) or,
with --runs-dir, run folders; the paper's findings and settings from kemmerling-claims.toml
(transcribed); the prose from kemmerling.md.j2. Every number the template prints passes through a
template field (build_lavik's Recorder), so tests/test_pages.py can tell computed numbers from
typed ones. Each finding is a rule from verdicts.py, paired over seeds, judged part by part, with
the floor of reconstructing every input as the mean training image; an experiment that is not
committed yet leaves its findings "not run yet" with the command that produces it.

Measures (validation split, per seed):
  final  = loss of the trained network (the "original" probe);
  early  = mean validation loss over the first quarter of the epochs (convergence speed: a lower
           early loss is a steeper curve);
  noise  = loss with N(0, sigma^2) on every pre-activation in every pass (summary extra.noise).
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
from build_lavik import cell  # noqa: E402
from page_tools import builder_main, load_experiments, render_template  # noqa: E402
from lavik_results import Exp, stat_of  # noqa: E402

RESULTS = HERE / "results"
CONFIGS = ("feedback", "timesteps", "constant-gain", "threshold", "grid", "conv-feedback")
NEGLIGIBLE = 0.02  # a relative loss change below 2 % counts as "no or negligible improvement"
ON_PAR = 0.05  # final losses within 5 % of each other count as "on par"
SIGMA = 2.0  # the paper's Fig. 8 noise level


def config_name(config: str) -> str:
    return f"configs/kemmerling/{config}.toml"


def produce_command(config: str) -> str:
    return (f"loopnets run {config_name(config)} --workers 2 && python docs/reproductions/collect.py runs "
            f"kemmerling-{config}")


# --- per-seed measures ------------------------------------------------------------------------------

def final(exp: Exp, variant: str) -> dict[int, float]:
    return exp.values(variant, "original", "loss")


def early(exp: Exp, variant: str) -> dict[int, float]:
    out = {}
    for seed, curve in (exp.curves.get(variant) or {}).items():
        losses = [x for x in curve.get("val_loss") or [] if x is not None]
        if losses and int(seed) in final(exp, variant):
            out[int(seed)] = statistics.mean(losses[:max(1, len(losses) // 4)])
    return out


def extra(exp: Exp, variant: str, analysis: str) -> dict[int, dict]:
    return {seed: e for seed, s in exp.runs.get(variant, {}).items()
            if s.get("status") == "finished" and (e := (s.get("extra") or {}).get(analysis))}


def noise_at(exp: Exp, variant: str, sigma: float) -> dict[int, float]:
    return {seed: float(n["loss"][n["sigmas"].index(sigma)]) for seed, n in extra(exp, variant, "noise").items()
            if sigma in n.get("sigmas", [])}


def noise_rise(exp: Exp, variant: str, sigma: float) -> dict[int, float]:
    clean, noisy = noise_at(exp, variant, 0.0), noise_at(exp, variant, sigma)
    return {s: noisy[s] - clean[s] for s in clean.keys() & noisy.keys()}


def hist_values(exp: Exp, variant: str, key: str) -> dict[int, float]:
    return {seed: float(h[key]) for seed, h in extra(exp, variant, "histograms").items() if h.get(key) is not None}


def floor(exp: Exp, variant: str) -> tuple[dict[int, float], float, bool] | None:
    """A reconstruction no better than the mean training image (beyond noise) is at chance."""
    chance = exp.data.get("mean_input_mse")
    return None if chance is None else (final(exp, variant), chance, False)


def fmt(values: dict[int, float], digits: int = 4) -> str:
    return cell(stat_of(values), digits)


def lower(claim: str, exp: Exp, a: str, b: str, measure=final, exp_b: Exp | None = None) -> V.Verdict:
    """"b's measure is lower than a's", floored on b's final loss."""
    exp_b = exp_b or exp
    return V.compare(claim, measure(exp, a), measure(exp_b, b), "lower", floor=floor(exp_b, b), digits=4)


# --- the findings ---------------------------------------------------------------------------------------
# Each takes {config: Exp} and returns (our numbers, verdict), or None when a config it needs is missing.

def finding_1(x):
    e = x["feedback"]
    ours = (f"final: partial {fmt(final(e, 'partial-t2'))} vs standard {fmt(final(e, 'none-t1'))}; early: partial "
            f"{fmt(early(e, 'partial-t2'))} vs standard {fmt(early(e, 'none-t1'))}")
    return ours, V.any_of("partial feedback lowers the final loss and/or the early loss", [
        lower("final: partial below standard", e, "none-t1", "partial-t2"),
        lower("early: partial below standard", e, "none-t1", "partial-t2", early)])


def finding_2(x):
    e = x["timesteps"]
    by_t = {v["unroll"]: v["variant"] for v in e.results["variants"]}
    if 2 not in by_t:
        return None
    base = final(e, by_t[2])
    bound = NEGLIGIBLE * statistics.mean(base.values()) if base else 0.0
    ours = "final: " + ", ".join(f"T={t}: {fmt(final(e, v))}" for t, v in sorted(by_t.items()))
    parts = [V.at_most(f"T={t} improves on T=2 by less than {NEGLIGIBLE:.0%} of T=2's loss", base, final(e, v), bound,
                     two_sided=False, floor=floor(e, v)) for t, v in sorted(by_t.items()) if t > 2]
    return ours, V.all_of("no T > 2 improves on T = 2 by more than a negligible amount", parts)


def finding_3(x):
    e = x["feedback"]
    ours = (f"early: comprehensive {fmt(early(e, 'comprehensive-t2'))} vs standard {fmt(early(e, 'none-t1'))}; final: "
            f"comprehensive {fmt(final(e, 'comprehensive-t2'))} vs partial {fmt(final(e, 'partial-t2'))}")
    return ours, V.all_of("comprehensive converges faster than standard and settles below partial", [
        lower("early: comprehensive below standard", e, "none-t1", "comprehensive-t2", early),
        lower("final: comprehensive below partial", e, "partial-t2", "comprehensive-t2")])


def finding_4(x):
    e = x["feedback"]
    fractions = hist_values(e, "partial-t2", "fraction_max_gain")
    if not fractions:
        return None
    max_gain = next(iter(hist_values(e, "partial-t2", "max_gain").values()), float("nan"))
    ours = (f"fraction of E1 gains at the maximum {max_gain:g} (mu_D >= eta): {fmt(fractions, 3)}; mean gain "
            f"{fmt(hist_values(e, 'partial-t2', 'mean_gain'), 2)}")
    half = {s: 0.5 for s in fractions}
    return ours, V.compare("more than half of the gains are at the maximum", half, fractions, "higher")


def finding_5(x):
    e = x["constant-gain"]
    ours = (f"one connection: early learned {fmt(early(e, 'partial-t2'))} / constant {fmt(early(e, 'partial-t1-constant'))}"
            f" / standard {fmt(early(e, 'none-t1'))}, final constant {fmt(final(e, 'partial-t1-constant'))} vs standard "
            f"{fmt(final(e, 'none-t1'))}; several connections: early constant {fmt(early(e, 'comprehensive-t1-constant'))} "
            f"vs learned {fmt(early(e, 'comprehensive-t2'))}, final constant {fmt(final(e, 'comprehensive-t1-constant'))} "
            f"vs standard {fmt(final(e, 'none-t1'))}")
    standard = final(e, "none-t1")
    return ours, V.all_of("a constant gain: steeper than standard and less steep than learned, ending worse (one "
                          "connection); faster than learned, ending on par (several)", [
        lower("(a) one connection, early: constant below standard", e, "none-t1", "partial-t1-constant", early),
        lower("(a) one connection, early: learned below constant", e, "partial-t1-constant", "partial-t2", early),
        V.compare("(b) one connection, final: constant above standard", standard, final(e, "partial-t1-constant"),
                  "higher", floor=floor(e, "none-t1"), digits=4),
        lower("(c) several connections, early: constant below learned", e, "comprehensive-t2",
              "comprehensive-t1-constant", early),
        V.at_most(f"(d) several connections, final: constant within {ON_PAR:.0%} of standard", standard,
                final(e, "comprehensive-t1-constant"),
                ON_PAR * statistics.mean(standard.values()) if standard else 0.0, two_sided=True,
                floor=floor(e, "comprehensive-t1-constant"))])


def finding_6(x):
    e = x["feedback"]
    sigmas = sorted({s for n in extra(e, "none-t1", "noise").values() for s in n.get("sigmas", []) if s > 0})
    if SIGMA not in sigmas:
        return None
    ours = (f"loss at sigma {SIGMA:g}: partial {fmt(noise_at(e, 'partial-t2', SIGMA))} vs standard "
            f"{fmt(noise_at(e, 'none-t1', SIGMA))}; rise over the clean loss: partial "
            f"{fmt(noise_rise(e, 'partial-t2', SIGMA))}, standard {fmt(noise_rise(e, 'none-t1', SIGMA))}")
    parts = [V.compare(f"sigma {s:g}: partial's noisy loss below standard's", noise_at(e, "none-t1", s),
                       noise_at(e, "partial-t2", s), "lower", floor=floor(e, "partial-t2"), digits=4) for s in sigmas]
    parts.append(V.compare(f"partial's loss rises less than standard's by sigma {SIGMA:g}", noise_rise(e, "none-t1", SIGMA),
                           noise_rise(e, "partial-t2", SIGMA), "lower", floor=floor(e, "partial-t2"), digits=4))
    return ours, V.all_of("with feedback the noisy loss is lower at every sigma and rises less", parts)


def finding_7(x):
    e = x["conv-feedback"]
    ours = (f"conv autoencoder on MNIST (not CIFAR-10): final partial {fmt(final(e, 'partial-t2'))} vs standard "
            f"{fmt(final(e, 'none-t1'))}")
    on_mnist = lower("on MNIST: partial's final loss below standard's", e, "none-t1", "partial-t2")
    return ours, V.Verdict("not tested: CIFAR-10 is not shipped", "not tested", on_mnist.markdown().replace("**", ""))


def finding_8(x):
    e = x["conv-feedback"]
    ours = (f"conv autoencoder on MNIST: rise of the loss at sigma {SIGMA:g} over the clean loss: partial "
            f"{fmt(noise_rise(e, 'partial-t2', SIGMA))}, standard {fmt(noise_rise(e, 'none-t1', SIGMA))}")
    on_mnist = V.compare(f"on MNIST: partial's loss rises more than standard's by sigma {SIGMA:g}",
                         noise_rise(e, "none-t1", SIGMA), noise_rise(e, "partial-t2", SIGMA), "higher",
                         floor=floor(e, "partial-t2"), digits=4)
    return ours, V.Verdict("not tested: CIFAR-10 is not shipped", "not tested", on_mnist.markdown().replace("**", ""))


def finding_10(x):
    e = x["grid"]
    names = {(float(v["variant"].split("-b")[1].split("-eta")[0]), float(v["variant"].split("-eta")[1])): v["variant"]
             for v in e.results["variants"] if "-b" in v["variant"] and "-eta" in v["variant"]}
    betas, etas = sorted({b for b, _ in names}), sorted({t for _, t in names})
    means = {k: statistics.mean(f.values()) for k, n in names.items() if (f := final(e, n))}
    rows = ", ".join(f"beta {b:g}: " + "/".join(f"{means[(b, t)]:.4f}" if (b, t) in means else "—" for t in etas)
                     for b in betas)
    ours = f"final loss (mean over seeds) by beta_max for eta = {'/'.join(f'{t:g}' for t in etas)}: {rows}"
    parts = []
    for t in (t for t in etas if t >= 5):
        for b in (b for b in betas if b < 0.8):
            if (0.8, t) in names and (b, t) in names:
                parts.append(lower(f"(a) eta {t:g}: beta 0.8 below beta {b:g}", e, names[(b, t)], names[(0.8, t)]))
    big = [t for t in etas if t >= 5 and (0.8, t) in names]
    for a, b in zip(big, big[1:]):
        parts.append(lower(f"(b) beta 0.8: eta {a:g} below eta {b:g}", e, names[(0.8, b)], names[(0.8, a)]))
    for b in (0.8, 0.9):
        if (b, 5.0) in names and (0.95, 5.0) in names:
            parts.append(lower(f"(c) eta 5: beta 0.95 below beta {b:g}", e, names[(b, 5.0)], names[(0.95, 5.0)]))
    if (0.95, 5.0) in names:
        base = final(e, names[(0.95, 5.0)])
        for t in (t for t in etas if t < 5 and (0.95, t) in names):
            parts.append(V.at_most(f"(d) beta 0.95: eta {t:g} improves on eta 5 by less than {NEGLIGIBLE:.0%}", base,
                                 final(e, names[(0.95, t)]), NEGLIGIBLE * statistics.mean(base.values()),
                                 two_sided=False, floor=floor(e, names[(0.95, t)])))
    return ours, V.all_of("beta 0.8 best of beta <= 0.8 at eta >= 5, lower eta better there; beta 0.95 better still "
                          "at eta 5, eta below 5 no help", parts)


def finding_11(x):
    e = x["threshold"]
    ours = (f"final: gain {fmt(final(e, 'partial-t2-gain'))}, threshold {fmt(final(e, 'partial-t2-threshold'))}, both "
            f"{fmt(final(e, 'partial-t2-both'))}, standard {fmt(final(e, 'none-t1'))}")
    return ours, V.all_of("threshold and both beat the standard AE; gain only is best", [
        lower("threshold below standard", e, "none-t1", "partial-t2-threshold"),
        lower("both below standard", e, "none-t1", "partial-t2-both"),
        lower("gain only below threshold", e, "partial-t2-threshold", "partial-t2-gain"),
        lower("gain only below both", e, "partial-t2-both", "partial-t2-gain")])


FINDINGS = {  # finding -> (the configs it needs, its rule); None: no config (CIFAR-10 classifier)
    1: (("feedback",), finding_1), 2: (("timesteps",), finding_2), 3: (("feedback",), finding_3),
    4: (("feedback",), finding_4), 5: (("constant-gain",), finding_5), 6: (("feedback",), finding_6),
    7: (("conv-feedback",), finding_7), 8: (("conv-feedback",), finding_8), 9: ((), None),
    10: (("grid",), finding_10), 11: (("threshold",), finding_11),
}


# --- the page ---------------------------------------------------------------------------------------

def contrast_rows(e: Exp, factor: float) -> list[tuple[str, str, str, str]]:
    """App. 7.5: pass-1 and last-pass MSE and the mean pixel gap of inputs scaled by `factor`."""
    rows = []
    for v in e.results["variants"]:
        at = {s: c for s, c in extra(e, v["variant"], "contrast").items() if factor in c["factors"]}
        if at:
            pick = lambda key: {s: c[key][c["factors"].index(factor)] for s, c in at.items()}  # noqa: E731
            rows.append((v["variant"], fmt(pick("first")), fmt(pick("last")), fmt(pick("mean_pixel_gap"))))
    return rows


def settings(e: Exp) -> tuple[str, str]:
    """(epochs, seeds) of an experiment, from its runs."""
    epochs = sorted({s.get("epochs_run") for seeds in e.runs.values() for s in seeds.values() if s.get("epochs_run")})
    seeds = sorted({s for seeds in e.runs.values() for s in seeds})
    return "/".join(str(x) for x in epochs) or "—", str(len(seeds))


def context(exps: dict[str, Exp], paper: dict) -> dict:
    c: dict = {"paper": paper["paper"], "level": f"{V.LEVEL:.0%}", "negligible": f"{NEGLIGIBLE:.0%}",
               "on_par": f"{ON_PAR:.0%}", "sigma": f"{SIGMA:g}",
               "feedback": None, "constant": None, "conv": None, "contrast": None,
               "missing": [(f"kemmerling-{k}", produce_command(k)) for k in CONFIGS if k not in exps]}
    findings = []
    for i, text in enumerate(paper["claim"], start=1):
        needs, rule = FINDINGS[i]
        row = {"i": str(i), "paper": text["paper"], "ours": None, "outcome": "not tested", "verdict": None,
               "not_run": [produce_command(k) for k in needs if k not in exps]}
        result = rule(exps) if rule is not None and not row["not_run"] else None
        if result is not None:
            row["ours"], verdict = result
            row["outcome"], row["verdict"] = verdict.outcome, verdict.markdown().replace("\n", "\n  ")
        elif rule is not None and not row["not_run"]:
            row["ours"] = "the runs hold no measurement for this rule"
        findings.append(row)
    c["findings"] = findings
    c["data"] = next(({"n_train": f"{e.data['n_train']:,}", "n_val": f"{e.data['n_val']:,}",
                       "floor": f"{e.data['mean_input_mse']:.4f}"} for e in exps.values() if "mean_input_mse" in e.data),
                     None)
    c["runs"] = []
    for k in CONFIGS:
        e = exps.get(k)
        if e is None:
            c["runs"].append((config_name(k), None))
            continue
        epochs, seeds = settings(e)
        n = sum(len(s) for s in e.runs.values())
        done = sum(s.get("status") == "finished" for seeds_ in e.runs.values() for s in seeds_.values())
        c["runs"].append((config_name(k), {"runs": f"{done} of {n}", "minutes": f"{e.wall_minutes():.1f}", "epochs": epochs,
                                           "seeds": seeds, "threads": e.threads(),
                 "load": f"{max(e.loads(), default=0.0):.1f}"}))
    if "feedback" in exps:
        e = exps["feedback"]
        c["contrast"] = {"factor": "0.5", "rows": contrast_rows(e, 0.5)}
        fb = {"partial_off": fmt(e.values("partial-t2", "feedback_off", "loss")), "partial": fmt(final(e, "partial-t2")),
              "standard": fmt(final(e, "none-t1"))}
        fb["off_worse"] = V.compare("one pass of the trained partial network is worse than the standard autoencoder",
                                    final(e, "none-t1"), e.values("partial-t2", "feedback_off", "loss"), "higher",
                                    digits=4).markdown()
        fractions = hist_values(e, "partial-t2", "fraction_max_gain")
        fb["fraction"] = fmt(fractions, 3) if fractions else None
        c["feedback"] = fb
    if "constant-gain" in exps:
        e = exps["constant-gain"]
        cc = final(e, "comprehensive-t1-constant")
        c["constant"] = {"several": fmt(cc), "at_floor": V.above_chance(cc, e.data["mean_input_mse"], False)[1]
                         if cc and "mean_input_mse" in e.data else "—",
                         "degenerate": bool(cc) and "mean_input_mse" in e.data
                         and not V.above_chance(cc, e.data["mean_input_mse"], False)[0]}
    if "conv-feedback" in exps:
        e = exps["conv-feedback"]
        fractions = hist_values(e, "partial-t2", "fraction_max_gain")
        c["conv"] = {"fraction": fmt(fractions, 3) if fractions else None, "partial": fmt(final(e, "partial-t2")),
                     "standard": fmt(final(e, "none-t1")),
                     "floor": f"{e.data['mean_input_mse']:.4f}" if "mean_input_mse" in e.data else "—"}
    return c


def load_all(results_dir: Path) -> dict[str, Exp]:
    return load_experiments(results_dir, {k: f"kemmerling-{k}" for k in CONFIGS})


def render(results_dir: Path) -> tuple[str, set[str]]:
    """(the page, the numbers the template printed through its fields)."""
    paper = tomllib.loads((HERE / "kemmerling-claims.toml").read_text())
    return render_template("kemmerling.md.j2", context(load_all(results_dir), paper))


def build(results_dir: Path, out: Path) -> str:
    text, _ = render(Path(results_dir))
    Path(out).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    builder_main(render, __doc__, HERE / "kemmerling.md", argv)


if __name__ == "__main__":
    main()
