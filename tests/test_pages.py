"""The results pages: rebuilt from the committed results (docs/reproductions/results/), no typed
numbers on the Lavik page, the collector, `make pages`' driver, and the verdict rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from test_experiments import TINY

from loopnets.cli import main

REPRO = ROOT / "docs" / "reproductions"
RESULTS = REPRO / "results"
sys.path.insert(0, str(REPRO))  # the builders import verdicts / collect from beside themselves

import build_lavik  # noqa: E402
import collect  # noqa: E402
import pages  # noqa: E402
import verdicts as V  # noqa: E402

# Numbers that are structure, not results: the allow-list (kept small and explicit).
STRUCTURAL = [
    re.compile(r"```.*?```", re.S),  # the page's command block
    re.compile(r"`[A-Za-z_][^`\n]*`"),  # code spans that start with a name: configs, paths, commands, keys
    # references: Table C.2, Tables 4.4, 4.5, B.1-B.6, Sec. 5.1, eqs 5.1 / 5.2, Fig. 3.3, Figs. 3, 4, App. D
    re.compile(r"\b(?:Tables?|Sec\.|eqs?|Figs?\.|App\.)\s+[A-D]?\d+(?:\.\d+)?(?:\s*(?:-|/|,)\s*[A-D]?\d+(?:\.\d+)?)*"),
    re.compile(r"\bx\d\b"),  # variant labels: COUPLE x3
    re.compile(r"\bclaim \d\b"),  # the thesis's numbered claims
    re.compile(r"\((?:19|20)\d\d\)"),  # the thesis's year: Lavik (2024)
    re.compile(r"\b(?:Caswell, Shen and Wang|Caswell et al\.) (?:19|20)\d\d"),  # the paper's year
    re.compile(r"\bCIFAR-10\b"),  # a data set's name
]
JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def unexplained_numbers(page: str, computed: set[str], transcribed: set[str]) -> list[str]:
    """The numbers in `page` that neither the builder printed nor the transcribed tables hold."""
    for pattern in STRUCTURAL:
        page = pattern.sub(" ", page)
    return [m.group() for m in build_lavik.NUMBER.finditer(page)
            if m.group().lstrip("+") not in computed and m.group().lstrip("+") not in transcribed]


def literals_in_tags(template: str) -> list[str]:
    """Numbers written inside the template's {{ }} / {% %} tags (subscripts like [0] aside)."""
    found = []
    for tag in JINJA_TAG.findall(template):
        found += re.findall(r"(?<![\w\[])\d+(?:\.\d+)?", tag)
    return found


def collected_page_equals_run_folders(builder, runs: Path, out: Path, tmp_path: Path, transcribed: set[str]) -> str:
    """The builder's page from the run folders equals the one from their collected results, and holds no
    typed number; the page."""
    assert builder.build(runs, tmp_path / "from-runs.md") == builder.build(out, tmp_path / "from-results.md")
    page, computed = builder.render(out)
    assert not unexplained_numbers(page, computed, transcribed)
    return page


@pytest.fixture(scope="module")
def rendered() -> tuple[str, set[str]]:
    """The Lavik page rendered from the committed results and the numbers its fields printed."""
    return build_lavik.render(RESULTS)


def reference() -> dict:
    return build_lavik.tomllib.loads((REPRO / "lavik-thesis.toml").read_text())


# --- (a) every page whose results are committed rebuilds to the committed page --------------------

@pytest.mark.parametrize("page", pages.PAGES, ids=lambda p: p.page)
def test_page_rebuilds_from_committed_results_or_is_listed_as_missing(page, tmp_path):
    absent = pages.missing(page, RESULTS)
    present = [n for n in pages.experiments(page) if n not in absent and n not in page.optional]
    if absent and not (page.partial and present):
        # not committed yet: `make pages` must name every missing experiment and its command
        lines = []
        assert pages.rebuild(RESULTS, root=ROOT, out=lines.append, only=page) == 1
        report = "\n".join(lines)
        assert f"{page.page}: NOT rebuilt" in report
        for name, command in absent.items():
            assert f"{name}: {command}" in report
        return
    out = tmp_path / Path(page.page).name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / page.builder), "--runs-dir", str(RESULTS), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (ROOT / page.page).read_text(), f"{page.page} differs from its rebuild: run `make pages`"


def test_make_pages_names_what_is_missing_and_fails_unless_allowed(tmp_path):
    lines = []
    lavik = pages.PAGES[0]
    assert pages.rebuild(tmp_path, root=ROOT, out=lines.append, only=lavik) == 1
    assert lines[0].startswith("docs/reproductions/lavik.md: NOT rebuilt")
    assert any("lavik-iris: loopnets run configs/lavik/iris.toml --workers 2 && python docs/reproductions/collect.py "
               "runs lavik-iris" in line for line in lines)
    assert pages.rebuild(tmp_path, allow_missing=True, root=ROOT, out=lines.append, only=lavik) == 0


def test_lavik_results_are_committed_and_compact():
    collected = sorted(p.parent.name for p in RESULTS.glob("lavik-*/results.json"))
    assert "lavik-iris" in collected
    for name in collected:
        folder = RESULTS / name
        assert not list(folder.rglob("*.lnet")) and not list(folder.rglob("metrics.csv")), f"{name}: checkpoints or metrics"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < 600_000, f"{name}: {size} bytes of results; collect.py keeps them compact"


# --- (b) no typed numbers -----------------------------------------------------------------------

def test_lavik_page_holds_no_typed_number(rendered):
    page, computed = rendered
    assert not unexplained_numbers(page, computed, build_lavik.thesis_numbers(reference()))


def test_lavik_template_writes_no_number_in_its_fields():
    assert not literals_in_tags((REPRO / "lavik.md.j2").read_text())


def test_a_typed_number_is_caught(rendered):
    """The check above can fail: a number typed into the template's prose, or into a field."""
    page, computed = rendered
    typed = page.replace("## What agrees", "Feedback off costs 0.4242 accuracy on average.\n\n## What agrees")
    assert unexplained_numbers(typed, computed, build_lavik.thesis_numbers(reference())) == ["0.4242"]
    assert literals_in_tags("{{ '0.87' }} and {{ x | round(3) }} and {{ rows[0] }}") == ["0.87", "3"]


def test_lavik_page_quotes_the_thesis_correctly(rendered):
    page, _ = rendered
    assert "0.889" in page  # the thesis's mean over its 12 loop variants (issue 17's misquote "about 0.87")
    assert "RMSE 86.1-131.0" in page  # bike COMBINE (misquoted as 90-131)
    assert "init=default" not in page and "9,670" not in page  # the two init claims without a config are gone


# --- the collector ------------------------------------------------------------------------------

def test_collected_results_give_the_page_the_run_folders_give(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)  # a tiny iris sweep: ffn and couple x2 w. skip, 2 seeds, 3 epochs
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "name=lavik-iris"]) == 0
    out = tmp_path / "results"
    assert collect.main([str(runs), "--out", str(out)]) == 0
    folder = out / "lavik-iris"
    assert {p.name for p in folder.iterdir()} >= {"results.json", "experiment.toml", "data.json", "curves.json", "ffn"}
    assert (folder / "couple-x2-skip" / "seed=1" / "summary.json").is_file()
    assert not list(folder.rglob("*.lnet")) and not list(folder.rglob("metrics.csv"))
    data = json.loads((folder / "data.json").read_text())
    assert data["n_val"] == 30 and data["classes"] == 3 and data["one_sample_accuracy"] == pytest.approx(1 / 30)
    curves = json.loads((folder / "curves.json").read_text())
    assert len(curves["couple-x2-skip"]["0"]["val_accuracy"]) == 3
    from_runs = build_lavik.build(runs, tmp_path / "a.md")
    from_results = build_lavik.build(out, tmp_path / "b.md")
    assert from_runs == from_results
    assert "Not run yet: `loopnets run configs/lavik/bike.toml" in from_results


def test_collect_refuses_a_folder_without_reports(tmp_path, capsys):
    (tmp_path / "runs" / "lavik-iris").mkdir(parents=True)
    assert collect.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    assert "loopnets run CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the verdict rules --------------------------------------------------------------------------

def seeds(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


def test_a_clear_paired_change_agrees_and_its_opposite_disagrees():
    before, after = seeds(0.80, 0.85, 0.90, 0.82, 0.88), seeds(0.30, 0.40, 0.35, 0.33, 0.41)
    v = V.compare("drops", before, after, "lower")
    assert v.outcome == V.AGREES and "n = 5 seeds" in v.evidence
    assert V.compare("rises", before, after, "higher").outcome == V.DISAGREES


def test_a_change_within_seed_noise_is_inconclusive():
    before, after = seeds(0.80, 0.85, 0.90, 0.82), seeds(0.90, 0.75, 0.95, 0.77)
    assert V.compare("drops", before, after, "lower").outcome == V.INCONCLUSIVE
    assert V.compare("rises", before, after, "higher").outcome == V.INCONCLUSIVE


def test_the_comparison_is_paired_over_shared_seeds():
    # the same seeds' differences are all +0.1, although the two sides' spreads overlap widely
    before, after = seeds(0.2, 0.5, 0.8), seeds(0.3, 0.6, 0.9)
    assert V.compare("rises", before, after, "higher").outcome == V.AGREES
    shifted = {1: 0.6, 2: 0.9, 3: 0.95}  # seeds 1 and 2 shared
    assert V.paired(before, shifted).n == 2
    assert V.compare("rises", {0: 0.5}, {0: 0.9}, "higher").outcome == V.INCONCLUSIVE  # one seed: no noise estimate


def test_a_model_at_chance_makes_its_claim_inconclusive():
    at_chance = seeds(0.33, 0.36, 0.30, 0.35, 0.34)
    probed = seeds(0.05, 0.04, 0.06, 0.05, 0.05)
    v = V.compare("drops", at_chance, probed, "lower", floor=(at_chance, 1 / 3, True))
    assert v.outcome == V.INCONCLUSIVE and "chance" in v.evidence
    above = seeds(0.9, 0.92, 0.88, 0.91, 0.9)
    assert V.compare("drops", above, probed, "lower", floor=(above, 1 / 3, True)).outcome == V.AGREES
    # regression: an RMSE no better than predicting the mean is at chance
    rmse = seeds(12.6, 12.4, 12.7)
    assert V.compare("rises", rmse, seeds(20, 21, 22), "higher", floor=(rmse, 12.5, False)).outcome == V.INCONCLUSIVE


def test_a_margin_of_one_sample_is_respected():
    before, after = seeds(0.80, 0.80, 0.80, 0.80), seeds(0.82, 0.82, 0.82, 0.82)
    assert V.compare("rises", before, after, "higher").outcome == V.AGREES
    assert V.compare("rises", before, after, "higher", margin=1 / 30).outcome == V.INCONCLUSIVE


def test_a_compound_claim_is_judged_half_by_half():
    yes, no, unsure = (V.Verdict("h", o, "e") for o in (V.AGREES, V.DISAGREES, V.INCONCLUSIVE))
    assert V.all_of("both", [yes, yes]).outcome == V.AGREES
    assert V.all_of("both", [yes, no]).outcome == V.DISAGREES  # Hershey's E2: one half fails, so no "agrees"
    assert V.all_of("both", [yes, unsure]).outcome == V.INCONCLUSIVE
    assert V.all_of("none", []).outcome == V.INCONCLUSIVE
    assert "1 agrees, 1 disagrees" in V.all_of("both", [yes, no]).evidence


def test_timings_from_one_shared_clock_are_not_compared():
    assert V.timing_measurable("slower", [1, 5]).outcome == V.INCONCLUSIVE
    assert V.timing_measurable("slower", [5, 5]) is None


def test_compare_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        V.compare("c", seeds(1, 2), seeds(1, 2), "bigger")


# --- the Kemmerling page ---------------------------------------------------------------------------

import build_kemmerling  # noqa: E402

KEMMERLING_TINY = ["train.epochs=2", "train.seeds=[0,1,2]", "model.gated.hidden=16",
                   'train.analyses=["histograms","contrast"]', "train.noise_sigmas=[0.0,2.0]"]


def kemmerling_paper() -> dict:
    return build_kemmerling.tomllib.loads((REPRO / "kemmerling-claims.toml").read_text())


@pytest.fixture(scope="module")
def kemmerling_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(runs folder, collected results) of a tiny configs/kemmerling/feedback.toml: 3 seeds x 2 epochs."""
    root = tmp_path_factory.mktemp("kemmerling")
    runs, out = root / "runs", root / "results"
    assert main(["run", str(ROOT / "configs" / "kemmerling" / "feedback.toml"), "--runs-dir", str(runs), "--no-progress",
                 *KEMMERLING_TINY]) == 0
    assert collect.main([str(runs), "--out", str(out)]) == 0
    return runs, out


def test_kemmerling_page_holds_no_typed_number():
    page, computed = build_kemmerling.render(RESULTS)
    assert not unexplained_numbers(page, computed, build_lavik.thesis_numbers(kemmerling_paper()))
    typed = page.replace("## The runs", "Feedback lowers the loss by 0.4242.\n\n## The runs")
    assert unexplained_numbers(typed, computed, build_lavik.thesis_numbers(kemmerling_paper())) == ["0.4242"]


def test_kemmerling_template_writes_no_number_in_its_fields():
    assert not literals_in_tags((REPRO / "kemmerling.md.j2").read_text())


def test_kemmerling_page_from_collected_results_equals_the_run_folders_and_names_what_is_missing(kemmerling_tiny, tmp_path):
    runs, out = kemmerling_tiny
    data = json.loads((out / "kemmerling-feedback" / "data.json").read_text())
    assert data["task"] == "autoencoding" and 0.05 < data["mean_input_mse"] < 0.09  # the mean image's MSE on MNIST
    page = collected_page_equals_run_folders(build_kemmerling, runs, out, tmp_path,
                                             build_lavik.thesis_numbers(kemmerling_paper()))
    for config in ("timesteps", "constant-gain", "threshold", "grid", "conv-feedback"):
        assert f"not run yet: `{build_kemmerling.produce_command(config)}`" in page
    # the feedback experiment's findings are judged with seeds stated, part by part
    assert "- Finding 1: **" in page and "- Finding 3: **" in page and "n = 3" in page
    assert "| 2 | More than two timesteps" in page and "| **not tested** |" in page


def test_kemmerling_findings_respect_the_floor(kemmerling_tiny):
    """A network no better than the mean image makes its part inconclusive, whatever the comparison says."""
    _, out = kemmerling_tiny
    exp = build_kemmerling.load_all(out)["feedback"]
    exp.data["mean_input_mse"] = 1e-6  # every run is now worse than the floor
    _, verdict = build_kemmerling.finding_3({"feedback": exp})
    assert verdict.outcome == V.INCONCLUSIVE and all("at chance" in p.evidence for p in verdict.parts)
    exp.data["mean_input_mse"] = 10.0  # every run far better than the floor: judged on the paired interval
    _, verdict = build_kemmerling.finding_3({"feedback": exp})
    assert all("paired difference" in p.evidence and "n = 3 seeds" in p.evidence for p in verdict.parts)


def test_bounded_and_either_or_rules():
    ref = seeds(0.100, 0.110, 0.090, 0.105)
    tiny_gain = seeds(0.0995, 0.1094, 0.0896, 0.1046)  # about 0.5 % better, every seed
    big_gain = seeds(0.080, 0.090, 0.071, 0.084)  # about 20 % better, every seed
    noisy = seeds(0.080, 0.125, 0.070, 0.120)
    assert V.at_most("negligible", ref, tiny_gain, 0.002, two_sided=False).outcome == V.AGREES
    assert V.at_most("negligible", ref, big_gain, 0.002, two_sided=False).outcome == V.DISAGREES
    assert V.at_most("negligible", ref, noisy, 0.002, two_sided=False).outcome == V.INCONCLUSIVE
    assert V.at_most("on par", ref, tiny_gain, 0.005, two_sided=True).outcome == V.AGREES
    assert V.at_most("on par", ref, big_gain, 0.005, two_sided=True).outcome == V.DISAGREES
    assert V.at_most("on par", ref, {0: 0.1}, 0.005, two_sided=True).outcome == V.INCONCLUSIVE
    yes, no, unsure = (V.Verdict("h", o, "e") for o in (V.AGREES, V.DISAGREES, V.INCONCLUSIVE))
    assert V.any_of("or", [yes, unsure]).outcome == V.AGREES
    assert V.any_of("or", [yes, no]).outcome == V.INCONCLUSIVE
    assert V.any_of("or", [no, no]).outcome == V.DISAGREES
    assert V.any_of("or", [unsure, unsure]).outcome == V.INCONCLUSIVE


# --- the Caswell page ------------------------------------------------------------------------------

import build_caswell  # noqa: E402


def caswell_paper() -> dict:
    return build_caswell.tomllib.loads((REPRO / "caswell-paper.toml").read_text())


@pytest.fixture(scope="module")
def caswell_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(runs folder, collected results) of a tiny configs/caswell/synthetic-batch32.toml: 2 seeds x 1 epoch,
    200 images, 4 filters."""
    root = tmp_path_factory.mktemp("caswell")
    runs, out = root / "runs", root / "results"
    assert main(["run", str(ROOT / "configs" / "caswell" / "synthetic-batch32.toml"), "--runs-dir", str(runs),
                 "--no-progress", "train.epochs=1", "train.seeds=[0,1]", "data.options={n=200}", "model.loopy.filters=4",
                 "train.analyses=[]"]) == 0
    assert collect.main([str(runs), "--out", str(out)]) == 0
    return runs, out


def test_caswell_page_holds_no_typed_number():
    page, computed = build_caswell.render(RESULTS)
    assert not unexplained_numbers(page, computed, build_lavik.thesis_numbers(caswell_paper()))
    assert "| Loopy | 72.6 % | 57.4 % | 56.4 % |" in page  # Fig. 8, transcribed
    typed = page.replace("## The runs", "Loopy gains 4.2 points.\n\n## The runs")
    assert unexplained_numbers(typed, computed, build_lavik.thesis_numbers(caswell_paper())) == ["4.2"]


def test_committed_caswell_and_kemmerling_pages_are_their_builders_output():
    """Even with none of a page's experiments committed (pages.py then leaves it as it is), the committed
    page is what its builder writes from the committed results: no hand-edited page."""
    for builder, page in ((build_caswell, "caswell.md"), (build_kemmerling, "kemmerling.md")):
        assert builder.render(RESULTS)[0] == (REPRO / page).read_text(), f"{page}: run `make pages`"


def test_caswell_template_writes_no_number_in_its_fields():
    assert not literals_in_tags((REPRO / "caswell.md.j2").read_text())


def test_caswell_page_from_collected_results_equals_the_run_folders(caswell_tiny, tmp_path):
    runs, out = caswell_tiny
    page = collected_page_equals_run_folders(build_caswell, runs, out, tmp_path, build_lavik.thesis_numbers(caswell_paper()))
    assert f"Not run yet: `{build_caswell.produce_command('mnist')}`" in page
    # the stand-in's claims: paired over its 2 seeds, with the chance floor, the compound ones part by part
    assert "Loopy beats Vanilla (batch 32)" in page and "the loop-layer models overfit" in page
    assert "n = 2" in page or "at chance" in page


def test_caswell_claims_respect_chance(caswell_tiny):
    _, out = caswell_tiny
    exp = build_caswell.load_all(out)[0]["synthetic-batch32"]
    exp.data["chance_accuracy"] = exp.data["majority_accuracy"] = 0.999  # every model is now at chance
    verdicts = build_caswell.stand_in_claims(exp, 32)
    beats = [v for v in verdicts if v.claim.startswith(("Loopy beats", "Deep is worse"))]
    assert beats and all(v.outcome == V.INCONCLUSIVE and "at chance" in v.evidence for v in beats)


def test_kemmerling_and_caswell_results_are_compact():
    collected = sorted(p.parent for pattern in ("kemmerling-*", "caswell-*") for p in RESULTS.glob(f"{pattern}/results.json"))
    for folder in collected:
        assert not list(folder.rglob("*.lnet")) and not list(folder.rglob("*.png")), f"{folder.name}: run files"
        assert (folder / "data.json").is_file() and (folder / "curves.json").is_file(), f"{folder.name}: re-collect it"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < 600_000, f"{folder.name}: {size} bytes of results; collect.py keeps them compact"
