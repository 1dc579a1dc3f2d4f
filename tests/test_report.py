"""Reports from run folders: tables equal the numbers in the summaries, bands, layout, outputs.

The run folders are written here by hand in the docs/contract-runs.md format, with made-up but
internally consistent numbers: the probes' "original" equals the last epoch's validation
metrics, train_seconds in metrics.csv equals the summary's train ms per epoch.
"""

import csv
import json
import re
import statistics

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from loopnets.report import build_report
from loopnets.report.figures import columns, curve_figure
from loopnets.report.results import load_experiment
from loopnets.report.stats import band, mean_sd
from loopnets.report.tables import format_stat, format_value

EXPERIMENT_TOML = """\
name = "toy"
description = "Toy comparison of feedback variants on made-up numbers."
notes = "The thesis gives no batch size; we chose 8."

[data]
name = "iris"

[train]
epochs = 6
seeds = [0, 1, 2]

[[variants]]
method = "ffn"
skip = [false, true]

[[variants]]
method = "combine"
unroll = 2

[[variants]]
method = "couple"
unroll = [2, 3]
skip = [false, true]

[[variants]]
method = "tied"
unroll = 2
"""
# Configured but never run: couple-x2, couple-x3-skip, tied-x2.

# variant -> (method, unroll, skip, {seed: (epochs run, status)}); folder names sort differently
# from the thesis order (ffn, combine, couple, tied; without skip first), so ordering is tested.
VARIANTS = {
    "ffn": ("ffn", 1, False, {0: (6, "finished"), 1: (6, "finished"), 2: (4, "finished")}),
    "combine-x2": ("combine", 2, False, {0: (6, "finished"), 1: (5, "finished"), 2: (6, "finished")}),
    "couple-x3": ("couple", 3, False, {0: (6, "finished"), 1: (6, "finished"), 2: (3, "diverged")}),
    "ffn-skip": ("ffn", 1, True, {0: (6, "finished"), 1: (6, "finished"), 2: (6, "finished")}),
    "couple-x2-skip": ("couple", 2, True, {0: (6, "finished"), 1: (4, "finished")}),  # seed 2 missing
}


def val_loss(vi, seed, epoch):
    return 1.0 / epoch + 0.1 * seed + 0.03 * vi


def val_accuracy(vi, seed, epoch):
    return min(1.0, 0.4 + 0.07 * epoch + 0.02 * seed - 0.01 * vi)


def write_run(root, variant, vi, seed, method, unroll, skip, epochs, status, task="classification"):
    """One run folder in the contract format; returns its summary."""
    folder = root / variant / f"seed={seed}"
    folder.mkdir(parents=True)
    train_ms, val_ms = 10.0 * (1 + vi) + 1.5 * seed, 1.0 + 0.25 * seed + 0.1 * vi
    with (folder / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_loss", "val_accuracy", "train_seconds", "val_seconds"])
        for e in range(1, epochs + 1):
            acc = val_accuracy(vi, seed, e) if task == "classification" else ""
            w.writerow([e, val_loss(vi, seed, e) * 0.9, val_loss(vi, seed, e), acc, train_ms / 1000, val_ms / 1000])
    finished = status == "finished"

    def probe(shift):
        entry = {"loss": val_loss(vi, seed, epochs) + shift}
        if task == "classification":
            entry["accuracy"] = val_accuracy(vi, seed, epochs) - shift / 10
        return entry

    summary = {
        "experiment": "toy", "variant": variant, "seed": seed, "method": method, "unroll": unroll, "skip": skip,
        "status": status, "task": task, "loss": "cross_entropy" if task == "classification" else "rmse",
        "epochs_run": epochs, "best_epoch": epochs, "stopped_early": finished and epochs < 6,
        "error": None if finished else "loss is nan at epoch 4",
        "probes": {"original": probe(0.0), "skip_off": probe(0.5 + 0.1 * seed) if skip else None,
                   "feedback_off": probe(2.0 + 0.3 * seed) if method != "ffn" else None} if finished else None,
        "timing": {"train_ms_per_epoch": train_ms, "val_ms_per_epoch": val_ms, "wall_seconds": 1.0},
        "parameters": 100,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def experiment(tmp_path):
    """runs/toy with five variants; returns (folder, {variant: [summaries]})."""
    root = tmp_path / "toy"
    root.mkdir()
    (root / "experiment.toml").write_text(EXPERIMENT_TOML)
    written = {}
    for vi, (variant, (method, unroll, skip, seeds)) in enumerate(VARIANTS.items()):
        written[variant] = [write_run(root, variant, vi, seed, method, unroll, skip, epochs, status)
                            for seed, (epochs, status) in seeds.items()]
    (root / "couple-x2-skip" / "seed=2.partial-1234").mkdir()  # an interrupted run
    return root, written


def table_rows(markdown, column):
    """{model: {column: cell}} of the first Markdown table with a header cell `column`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if cells_of(line)[:1] == ["Model"] and column in cells_of(line))
    header = cells_of(lines[start])
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = cells_of(line)
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def cells_of(line):
    """The cells of a Markdown table line, padding stripped (tabulate pads columns to one width)."""
    return [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("|") else []


def test_build_report_writes_all_files(experiment):
    root, _ = experiment
    out = build_report(root)
    assert out == root / "report"
    names = {"report.html", "report.md", "probes.tex", "timing.tex", "probes.md", "results.json", "val_loss.png",
             "val_loss_time.png", "val_accuracy.png", "val_accuracy_time.png"}
    assert names <= {p.name for p in out.iterdir()}
    for name in names:
        assert (out / name).stat().st_size > 0
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    for png in ("val_loss.png", "val_loss_time.png", "val_accuracy.png", "val_accuracy_time.png"):
        assert f"]({png})" in md  # relative links beside the Markdown file
    build_report(root)  # rebuilding over an existing report works


def test_probe_table_is_mean_and_sample_sd_of_finished_seeds(experiment):
    root, written = experiment
    out = build_report(root)
    results = {v["variant"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    rows = table_rows((out / "report.md").read_text(), "Original acc.")
    labels = {"ffn": "FFN", "combine-x2": "COMBINE x2", "couple-x3": "COUPLE x3", "ffn-skip": "FFN w. skip",
              "couple-x2-skip": "COUPLE x2 w. skip"}
    titles = {"original": "Original", "skip_off": "Skip off", "feedback_off": "Feedback off"}
    checked = 0
    for variant, summaries in written.items():
        finished = [s for s in summaries if s["status"] == "finished"]
        row = rows[labels[variant]]
        assert row["Seeds"] == f"{len(finished)}/3"
        for probe, title in titles.items():
            applies = (probe != "skip_off" or summaries[0]["skip"]) and (probe != "feedback_off"
                                                                        or summaries[0]["method"] != "ffn")
            for metric, short in (("accuracy", "acc."), ("loss", "loss")):
                cell = row[f"{title} {short}"]
                if not applies:
                    assert cell == "—" and results[variant]["probes"][probe] is None
                    continue
                values = [s["probes"][probe][metric] for s in finished]
                mean, sd = statistics.mean(values), statistics.stdev(values)  # n - 1
                stat = results[variant]["probes"][probe][metric]
                assert stat["n"] == len(finished)
                assert stat["mean"] == pytest.approx(mean, abs=1e-12)
                assert stat["sd"] == pytest.approx(sd, abs=1e-12)
                assert cell == f"{mean:.4f} ± {sd:.4f}"
                checked += 1
    assert checked == 2 * (5 + 2 + 3)  # original x5, skip off x2, feedback off x3
    assert results["couple-x3"]["seeds"] == {"finished": [0, 1], "diverged": [2], "missing": []}


def test_band_is_mean_and_20_80_percentiles_of_seeds_that_reached_the_epoch():
    curves = [([1, 2, 3], [1.0, 10.0, 7.0]), ([1, 2], [2.0, 20.0]), ([1, 2, 3, 4], [3.0, 30.0, float("nan"), 9.0]),
              ([1], [4.0]), ([1], [5.0])]
    b = band(curves)
    np.testing.assert_array_equal(b.epochs, [1, 2, 3, 4])
    np.testing.assert_array_equal(b.n, [5, 3, 1, 1])  # epoch 3: the NaN is not a value
    np.testing.assert_allclose(b.mean, [3.0, 20.0, 7.0, 9.0])
    # [1..5]: rank 0.2 * 4 = 0.8 -> 1.8 and rank 3.2 -> 4.2; [10, 20, 30]: rank 0.4 -> 14, rank 1.6 -> 26
    np.testing.assert_allclose(b.low, [1.8, 14.0, 7.0, 9.0])
    np.testing.assert_allclose(b.high, [4.2, 26.0, 7.0, 9.0])


def test_variant_curves_use_every_seed_up_to_its_last_epoch(experiment):
    root, _ = experiment
    exp = load_experiment(root)
    ffn = next(v for v in exp.variants if v.name == "ffn")
    b = ffn.band("val_loss")
    np.testing.assert_array_equal(b.n, [3, 3, 3, 3, 2, 2])  # seed 2 stopped early after 4 epochs
    np.testing.assert_allclose(b.mean[4], statistics.mean([val_loss(0, 0, 5), val_loss(0, 1, 5)]))
    couple = next(v for v in exp.variants if v.name == "couple-x3")
    np.testing.assert_array_equal(couple.band("val_loss").n, [3, 3, 3, 2, 2, 2])  # diverged seed: 3 epochs


def test_sd_is_sample_sd_and_zero_for_one_seed_shown_as_na():
    assert mean_sd([2.0, 4.0, 9.0]).sd == pytest.approx(statistics.stdev([2.0, 4.0, 9.0]))
    assert mean_sd([0.7]).sd == 0.0 and mean_sd([0.7]).mean == 0.7
    assert mean_sd([]) is None
    assert format_value(2453.2) == "2.45e+03" and format_value(0.93333) == "0.9333"
    assert format_stat(mean_sd([61.0, 62.0]), ms=True) == "61.50 ± 0.71"


def test_time_weighted_x_is_epoch_times_mean_train_seconds(experiment):
    root, written = experiment
    exp = load_experiment(root)
    fig = curve_figure(exp, "val_loss", time_weighted=True)
    left = fig.axes[0]
    line = next(l for l in left.get_lines() if l.get_label() == "COUPLE x3")
    seconds = statistics.mean(s["timing"]["train_ms_per_epoch"] for s in written["couple-x3"]
                              if s["status"] == "finished") / 1000
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, 7) * seconds)
    assert left.get_xlabel() == "training time (s)"
    assert not any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)  # no bands
    epoch_fig = curve_figure(exp, "val_loss")
    np.testing.assert_array_equal(next(l for l in epoch_fig.axes[0].get_lines()
                                       if l.get_label() == "COUPLE x3").get_xdata(), np.arange(1, 7))
    assert sum(isinstance(c, PolyCollection) for c in epoch_fig.axes[0].collections) == 3  # one band each


def test_two_columns_without_skip_left_with_skip_right_shared_y(experiment, tmp_path):
    root, _ = experiment
    exp = load_experiment(root)
    assert [(title, [v.name for v in group]) for title, group in columns(exp.variants)] == [
        ("without bypassing skip", ["ffn", "combine-x2", "couple-x3"]),
        ("with bypassing skip", ["ffn-skip", "couple-x2-skip"])]
    fig = curve_figure(exp, "val_accuracy")
    left, right = fig.axes
    assert (left.get_title(), right.get_title()) == ("without bypassing skip", "with bypassing skip")
    assert [l.get_label() for l in left.get_lines()] == ["FFN", "COMBINE x2", "COUPLE x3"]
    assert [l.get_label() for l in right.get_lines()] == ["FFN", "COUPLE x2"]
    assert left.get_shared_y_axes().joined(left, right)
    # one color per family, one line style per unroll
    lines = {l.get_label(): l for l in left.get_lines() + right.get_lines()}
    assert lines["COMBINE x2"].get_color() != lines["COUPLE x3"].get_color()
    assert lines["COUPLE x3"].get_linestyle() != right.get_lines()[1].get_linestyle()
    assert right.get_lines()[1].get_color() == lines["COUPLE x3"].get_color()

    only = tmp_path / "only-no-skip"
    for vi, variant in enumerate(("ffn", "combine-x2")):
        method, unroll, skip, _ = VARIANTS[variant]
        write_run(only, variant, vi, 0, method, unroll, skip, 3, "finished")
    single = curve_figure(load_experiment(only), "val_loss")
    assert len(single.axes) == 1 and single.axes[0].get_title() == "without bypassing skip"


def test_html_is_self_contained(experiment):
    root, _ = experiment
    page = (build_report(root) / "report.html").read_text()
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert refs and all(ref.startswith("data:image/png;base64,") for ref in refs)
    assert len(refs) == 4  # the four figures, embedded
    assert "<table id=" in page and "<link" not in page and "url(" not in page


def test_missing_and_diverged_runs_are_reported(experiment):
    root, _ = experiment
    out = build_report(root)
    for text in ((out / "report.md").read_text(), (out / "report.html").read_text()):
        assert "2 of 3 seeds finished, 1 diverged" in text  # couple-x3
        assert "2 of 3 seeds finished, 1 missing" in text  # couple-x2-skip
        assert "loss is nan at epoch 4" in text
        for absent in ("couple-x2", "couple-x3-skip", "tied-x2"):  # configured, never run
            assert f"variant `{absent}` is in experiment.toml but has no run folder" in text.replace(
                "<code>", "`").replace("</code>", "`")
        assert "seed=2.partial-1234" in text
        assert "13 of 15 runs finished, 1 diverged, 1 missing" in text


def test_summary_paragraph_has_description_notes_data_seeds_epochs(experiment):
    root, _ = experiment
    md = (build_report(root) / "report.md").read_text()
    assert "Toy comparison of feedback variants on made-up numbers." in md
    assert "The thesis gives no batch size; we chose 8." in md
    assert "Data: iris" in md
    assert "Seeds: 3 (0-2)" in md
    assert "Epochs: at most 6; runs lasted 3-6 epochs (3 stopped early)." in md


def test_timing_table_and_change_against_ffn_with_same_skip(experiment):
    root, written = experiment
    out = build_report(root)
    rows = table_rows((out / "report.md").read_text(), "Train ms/epoch")
    mean = {v: statistics.mean(s["timing"]["train_ms_per_epoch"] for s in summaries if s["status"] == "finished")
            for v, summaries in written.items()}
    train = [s["timing"]["train_ms_per_epoch"] for s in written["combine-x2"]]
    assert rows["COMBINE x2"]["Train ms/epoch"] == f"{statistics.mean(train):.2f} ± {statistics.stdev(train):.2f}"
    assert rows["COMBINE x2"]["Train vs FFN"] == f"{100 * (mean['combine-x2'] / mean['ffn'] - 1):+.1f} %"
    assert rows["COUPLE x2 w. skip"]["Train vs FFN"] == f"{100 * (mean['couple-x2-skip'] / mean['ffn-skip'] - 1):+.1f} %"
    assert rows["FFN"]["Train vs FFN"] == "—"
    results = {v["variant"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert results["combine-x2"]["timing"]["train_ms_per_epoch_vs_ffn_percent"] == pytest.approx(
        100 * (mean["combine-x2"] / mean["ffn"] - 1))


def test_tables_follow_thesis_order_and_latex_uses_booktabs(experiment):
    root, _ = experiment
    out = build_report(root)
    order = ["FFN", "COMBINE x2", "COUPLE x3", "FFN w. skip", "COUPLE x2 w. skip"]
    md = (out / "report.md").read_text()
    assert list(table_rows(md, "Original acc.")) == order
    assert list(table_rows(md, "Train ms/epoch")) == order
    for name in ("probes.tex", "timing.tex"):
        tex = (out / name).read_text()
        assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
        assert tex.count("\\midrule") == 2  # under the header, between the skip blocks
        table = tex[tex.index("\\begin{tabular}"):]
        assert "$\\pm$" in table and "±" not in table
        body = [line.split(" & ")[0] for line in table.splitlines() if line.endswith("\\\\")][1:]
        assert body == order
    assert "---" in (out / "probes.tex").read_text()  # not applicable


def test_regression_report_has_loss_only(tmp_path):
    root = tmp_path / "reg"
    for vi, variant in enumerate(("ffn", "combine-x2")):
        method, unroll, skip, _ = VARIANTS[variant]
        for seed in (0, 1):
            write_run(root, variant, vi, seed, method, unroll, skip, 5, "finished", task="regression")
    out = build_report(root)
    assert not (out / "val_accuracy.png").exists() and (out / "val_loss.png").exists()
    md = (out / "report.md").read_text()
    header = ["Model", "Original (rmse)", "Feedback off (rmse)", "Seeds"]
    assert header in [cells_of(line) for line in md.splitlines()]  # no skip variant: no skip column
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"][0]["probes"]["original"]) == {"loss"}


def test_loss_axis_goes_log_when_a_run_blows_up(tmp_path):
    root = tmp_path / "blowup"
    write_run(root, "ffn", 0, 0, "ffn", 1, False, 4, "finished")
    write_run(root, "combine-x2", 1, 0, "combine", 2, False, 4, "finished")
    assert curve_figure(load_experiment(root), "val_loss").axes[0].get_yscale() == "linear"
    metrics = root / "combine-x2" / "seed=0" / "metrics.csv"
    lines = metrics.read_text().splitlines()
    cells = lines[-1].split(",")
    cells[2] = "1e8"  # val_loss of the last epoch
    metrics.write_text("\n".join(lines[:-1] + [",".join(cells)]) + "\n")
    assert curve_figure(load_experiment(root), "val_loss").axes[0].get_yscale() == "log"


def test_variant_whose_seeds_all_diverged_still_reports(tmp_path):
    root = tmp_path / "bad"
    write_run(root, "ffn", 0, 0, "ffn", 1, False, 4, "finished")
    write_run(root, "combine-x2", 1, 0, "combine", 2, False, 0, "diverged")  # diverged in epoch 1
    write_run(root, "combine-x2", 1, 1, "combine", 2, False, 2, "diverged")
    out = build_report(root)
    md = (out / "report.md").read_text()
    assert "0 of 2 seeds finished, 2 diverged" in md
    row = table_rows(md, "Original acc.")["COMBINE x2"]
    assert row["Original acc."] == "n/a" and row["Feedback off loss"] == "n/a" and row["Seeds"] == "0/2"
    combine = json.loads((out / "results.json").read_text())["variants"][1]
    assert combine["probes"]["original"]["accuracy"] is None and combine["epochs_run"] == {"0": 0, "1": 2}


def test_no_runs_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "experiment.toml").write_text(EXPERIMENT_TOML)
    (empty / "ffn").mkdir()  # a variant folder with no finished seed
    with pytest.raises(FileNotFoundError, match=r"no runs in .*empty.*<variant>/seed=<n>/summary\.json"):
        build_report(empty)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        build_report(tmp_path / "nowhere")


def test_unroll_sweep_figure_and_results_are_means_over_finished_seeds(experiment):
    root, written = experiment
    sweeps = {}  # variant -> {seed: accuracies}; ffn variants have no loop and no sweep
    for variant, summaries in written.items():
        method, unroll = VARIANTS[variant][0], VARIANTS[variant][1]
        if method == "ffn":
            continue
        for s in summaries:
            accuracy = [0.5 + 0.05 * min(t, unroll) + 0.01 * s["seed"] for t in range(1, 9)]
            s["unroll_sweep"] = {"passes": list(range(1, 9)), "loss": [1 - a for a in accuracy],
                                 "accuracy": accuracy, "training_unroll": unroll}
            (root / variant / f"seed={s['seed']}" / "summary.json").write_text(json.dumps(s))
            if s["status"] == "finished":
                sweeps.setdefault(variant, {})[s["seed"]] = accuracy
    out = build_report(root)
    assert (out / "unroll_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](unroll_sweep.png)" in (out / "report.md").read_text()
    results = {v["variant"]: v["unroll_sweep"] for v in json.loads((out / "results.json").read_text())["variants"]}
    assert results["ffn"] is None and results["ffn-skip"] is None
    for variant, by_seed in sweeps.items():  # couple-x3's diverged seed 2 is left out
        entry = results[variant]
        assert entry["training_unroll"] == VARIANTS[variant][1] and entry["accuracy"]["passes"] == list(range(1, 9))
        assert entry["accuracy"]["n"] == [len(by_seed)] * 8
        assert np.allclose(entry["accuracy"]["mean"], np.mean(list(by_seed.values()), axis=0))


def test_no_sweep_no_sweep_figure(experiment):
    root, _ = experiment
    out = build_report(root)
    assert not (out / "unroll_sweep.png").exists()
    assert all(v["unroll_sweep"] is None for v in json.loads((out / "results.json").read_text())["variants"])


def edit_summaries(root, variant, **changes):
    """Set top-level keys of every summary.json of `variant` (changes: key -> value or seed -> value)."""
    for path in sorted((root / variant).glob("seed=*/summary.json")):
        summary = json.loads(path.read_text())
        seed = summary["seed"]
        summary.update({k: (v(seed) if callable(v) else v) for k, v in changes.items()})
        path.write_text(json.dumps(summary))


def test_seeds_trained_together_show_shared_time_not_a_zero_sd(experiment):
    root, written = experiment
    # ffn-skip's three seeds trained as one batched group: each seed's time is the group's / 3
    edit_summaries(root, "ffn-skip", training={"path": "batched", "seeds_together": [0, 1, 2], "reason": None})
    # combine-x2 went through fit_many's sequential path: every seed timed on its own, a real spread
    edit_summaries(root, "combine-x2", training={"path": "sequential", "seeds_together": [0, 1, 2],
                                                 "reason": "sigmoid"})
    out = build_report(root)
    rows = table_rows((out / "report.md").read_text(), "Train ms/epoch")
    shared = statistics.mean(s["timing"]["train_ms_per_epoch"] for s in written["ffn-skip"])
    assert rows["FFN w. skip"]["Train ms/epoch"] == f"{shared:.2f} (shared, group of 3)"
    assert "±" not in rows["FFN w. skip"]["Validate ms/epoch"]
    train = [s["timing"]["train_ms_per_epoch"] for s in written["combine-x2"]]
    assert rows["COMBINE x2"]["Train ms/epoch"] == f"{statistics.mean(train):.2f} ± {statistics.stdev(train):.2f}"
    results = {v["variant"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    timing = results["ffn-skip"]["timing"]["train_ms_per_epoch"]
    assert timing["sd"] is None and timing["shared_groups"] == [3] and timing["independent_measurements"] == 1
    assert timing["mean"] == pytest.approx(shared) and timing["n"] == 3
    assert results["combine-x2"]["timing"]["train_ms_per_epoch"]["sd"] == pytest.approx(statistics.stdev(train))
    assert "shared" in (out / "report.html").read_text()


def test_two_groups_of_one_variant_give_an_sd_over_groups(experiment):
    root, written = experiment
    # a resumed sweep: seeds 0 and 1 trained together, seed 2 later alone
    edit_summaries(root, "ffn", training=lambda seed: {"path": "batched" if seed < 2 else "single",
                                                      "seeds_together": [0, 1] if seed < 2 else [seed]})
    exp = load_experiment(root)
    timing = next(v for v in exp.variants if v.name == "ffn").timing("train_ms_per_epoch")
    values = [s["timing"]["train_ms_per_epoch"] for s in written["ffn"]]
    assert timing.measurements == 2 and timing.groups == (2,) and timing.n == 3
    assert timing.sd == pytest.approx(statistics.stdev([statistics.mean(values[:2]), values[2]]))
    rows = table_rows((build_report(root) / "report.md").read_text(), "Train ms/epoch")
    assert rows["FFN"]["Train ms/epoch"] == f"{statistics.mean(values):.2f} ± {timing.sd:.2f} (shared, group of 2)"


def test_a_single_seed_shows_na_not_a_zero_sd(experiment):
    root, written = experiment
    for seed in (1, 2):  # combine-x2 keeps seed 0 only
        for f in (root / "combine-x2" / f"seed={seed}").iterdir():
            f.unlink()
        (root / "combine-x2" / f"seed={seed}").rmdir()
    out = build_report(root)
    md = (out / "report.md").read_text()
    one = written["combine-x2"][0]
    rows = table_rows(md, "Train ms/epoch")
    assert rows["COMBINE x2"]["Train ms/epoch"] == f"{one['timing']['train_ms_per_epoch']:.2f} ± n/a"
    probes = table_rows(md, "Original acc.")
    assert probes["COMBINE x2"]["Original acc."] == f"{one['probes']['original']['accuracy']:.4f} ± n/a"
    assert "± 0.0000" not in md and "± 0.00 " not in md
    results = {v["variant"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert results["combine-x2"]["timing"]["train_ms_per_epoch"]["sd"] is None
    assert results["combine-x2"]["probes"]["original"]["accuracy"]["sd"] is None
    assert format_stat(mean_sd([0.7])) == "0.7000 ± n/a"


def environment(load_start, load_end, cores=2):
    return {"cpu_count": cores, "cores_usable": cores, "torch_threads": 1,
            "load_average": {"start": load_start, "start_age_seconds": 0.1, "end": load_end}}


def test_report_warns_when_the_load_exceeded_the_cores(experiment):
    root, _ = experiment
    for variant in VARIANTS:
        edit_summaries(root, variant, environment=environment([1.2, 1.0, 0.8], [1.9, 1.1, 0.9]))
    out = build_report(root)
    assert "Warning" not in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["warnings"] == []
    # couple-x3 seed 1 started under load 3.5 on 2 cores; ffn seed 0 ended under 2.4
    edit_summaries(root, "couple-x3", environment=lambda seed: environment([3.5 if seed == 1 else 1.0, 1, 1], [1.5, 1, 1]))
    edit_summaries(root, "ffn", environment=lambda seed: environment([1.0, 1, 1], [2.4 if seed == 0 else 2.0, 1, 1]))
    out = build_report(root)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["overloaded_runs"] == [{"variant": "ffn", "seed": 0, "load": 2.4, "cores": 2},
                                          {"variant": "couple-x3", "seed": 1, "load": 3.5, "cores": 2}]
    (warning,) = results["warnings"]
    assert "ffn seed=0 (load 2.4 on 2 cores)" in warning and "couple-x3 seed=1 (load 3.5 on 2 cores)" in warning
    assert "not comparable" in warning and "ffn seed=1" not in warning
    assert md.count(f"> **Warning:** {warning}") == 2  # at the top and above the timing table
    assert '<p class="warning"><strong>Warning:</strong>' in page and "couple-x3 seed=1" in page


def test_runs_without_environment_records_give_no_load_warning(experiment):
    root, _ = experiment  # summaries written before environment existed
    assert load_experiment(root).warnings() == []


def set_accuracy(root, variant, by_seed):
    """Overwrite the original probe's accuracy of `variant`'s seeds: {seed: accuracy}."""
    for seed, accuracy in by_seed.items():
        path = root / variant / f"seed={seed}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["probes"]["original"]["accuracy"] = accuracy
        path.write_text(json.dumps(summary))


def drop_seed(root, variant, seed):
    for f in (root / variant / f"seed={seed}").iterdir():
        f.unlink()
    (root / variant / f"seed={seed}").rmdir()


BEST = {0: 0.90, 1: 0.80, 2: 0.70}  # ffn-skip: a wide spread over seeds


def verdict_runs(root):
    """Accuracies for the verdict: a consistent small gap (ffn), a gap within the seeds' noise (combine-x2),
    a large gap on 2 seeds (couple-x3), one shared seed (couple-x2-skip)."""
    set_accuracy(root, "ffn-skip", BEST)
    set_accuracy(root, "ffn", {0: 0.89, 1: 0.785, 2: 0.692})
    set_accuracy(root, "combine-x2", {0: 0.91, 1: 0.78, 2: 0.69})
    set_accuracy(root, "couple-x3", {0: 0.50, 1: 0.45})  # seed 2 diverged
    set_accuracy(root, "couple-x2-skip", {0: 0.60})
    drop_seed(root, "couple-x2-skip", 1)


def test_verdict_is_a_paired_comparison_over_shared_seeds(experiment):
    from scipy import stats

    root, _ = experiment
    verdict_runs(root)
    out = build_report(root)
    verdict = json.loads((out / "results.json").read_text())["verdict"]
    assert verdict["best"] == "FFN w. skip" and verdict["best_seeds"] == 3
    assert verdict["best_mean"] == pytest.approx(0.80)
    outcomes = {c["variant"]: (c["seeds"], c["outcome"]) for c in verdict["comparisons"]}
    # ffn is 0.008-0.015 below on every seed: worse, though its seeds spread by 0.2 (an unpaired test would not see it)
    assert outcomes == {"FFN": (3, "worse"), "COMBINE x2": (3, "within noise"), "COUPLE x3": (2, "worse"),
                        "COUPLE x2 w. skip": (1, "inconclusive")}
    ffn = next(c for c in verdict["comparisons"] if c["variant"] == "FFN")
    interval = stats.ttest_rel(list(BEST.values()), [0.89, 0.785, 0.692]).confidence_interval(0.95)
    assert (ffn["low"], ffn["high"]) == pytest.approx((interval.low, interval.high))
    assert ffn["difference"] == pytest.approx(statistics.mean([0.01, 0.015, 0.008]))
    md = (out / "report.md").read_text()
    assert ("**FFN w. skip is best by mean (0.8000 over 3 seeds). Within noise of it: COMBINE x2. Worse: FFN, "
            "COUPLE x3. Inconclusive (fewer than 2 shared seeds): COUPLE x2 w. skip.") in md
    rows = table_rows(md, "Shared seeds")
    assert rows["FFN"]["Verdict"] == "worse" and rows["COUPLE x2 w. skip"]["95 % interval"] == "n/a"
    assert "Validation set: size not recorded" in md


def test_one_validation_sample_is_the_resolution_floor(experiment):
    root, _ = experiment
    verdict_runs(root)
    for variant in VARIANTS:
        edit_summaries(root, variant, val_samples=50)
    out = build_report(root)
    md = (out / "report.md").read_text()
    assert "Validation set: 50 samples; one sample is worth 0.0200 accuracy." in md
    verdict = json.loads((out / "results.json").read_text())["verdict"]
    assert verdict["val_samples"] == 50 and verdict["one_sample"] == pytest.approx(0.02)
    # ffn's gap (0.011) is under one sample: within noise now
    assert {c["variant"]: c["outcome"] for c in verdict["comparisons"]}["FFN"] == "within noise"


def test_one_seed_or_chance_makes_the_verdict_inconclusive(tmp_path):
    root = tmp_path / "one"
    write_run(root, "ffn", 0, 0, "ffn", 1, False, 4, "finished")
    write_run(root, "combine-x2", 1, 0, "combine", 2, False, 4, "finished")
    md = (build_report(root) / "report.md").read_text()
    assert "**Inconclusive:" in md and "on one seed, which gives no noise estimate" in md
    write_run(root, "couple-x2", 2, 0, "couple", 2, False, 2, "diverged")  # no finished seed: listed, not judged
    verdict = json.loads((build_report(root) / "results.json").read_text())["verdict"]
    assert {c["variant"]: (c["seeds"], c["outcome"]) for c in verdict["comparisons"]}["COUPLE x2"] == (0, "inconclusive")
    drop_seed(root, "couple-x2", 0)
    for seed in (1, 2):
        write_run(root, "ffn", 0, seed, "ffn", 1, False, 4, "finished")
        write_run(root, "combine-x2", 1, seed, "combine", 2, False, 4, "finished")
    assert "Inconclusive" not in (build_report(root) / "report.md").read_text()
    for variant in ("ffn", "combine-x2"):
        edit_summaries(root, variant, classes=3)
    assert "Inconclusive" not in (build_report(root) / "report.md").read_text()  # 0.66-0.72: above chance
    set_accuracy(root, "ffn", {0: 0.34, 1: 0.33, 2: 0.335})  # chance is 1/3
    set_accuracy(root, "combine-x2", {0: 0.32, 1: 0.33, 2: 0.33})
    verdict = json.loads((build_report(root) / "results.json").read_text())["verdict"]
    assert verdict["chance"] == pytest.approx(1 / 3)
    assert verdict["conclusion"].startswith("Inconclusive: the best mean accuracy (0.3350) is at chance (0.3333")


def test_loss_axis_goes_log_past_a_decade(tmp_path):
    root = tmp_path / "spike"
    write_run(root, "ffn", 0, 0, "ffn", 1, False, 4, "finished")  # val_loss 1.0 -> 0.25

    def spike(loss):
        metrics = root / "ffn" / "seed=0" / "metrics.csv"
        lines = metrics.read_text().splitlines()
        cells = lines[1].split(",")
        cells[2] = str(loss)  # val_loss of epoch 1
        metrics.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
        return curve_figure(load_experiment(root), "val_loss").axes[0].get_yscale()

    assert spike(2.0) == "linear"  # 8x the lowest loss
    assert spike(3.0) == "log"  # 12x: the epoch-1 spike would flatten the rest


def test_settings_are_a_table_of_dotted_keys():
    from loopnets.report.page import settings_table

    config = {"name": "x", "data": {"name": "iris", "noise": {"sigma": 0.1}},
              "train": {"seeds": [0, 1], "shuffle": True, "lr": 0.001}}
    table = settings_table(config)
    assert table.header == ["Section", "Setting", "Value"]
    assert table.rows == [["data", "name", "iris"], ["data", "noise.sigma", "0.1"], ["train", "seeds", "0, 1"],
                          ["train", "shuffle", "true"], ["train", "lr", "0.001"]]


def test_report_md_settings_are_a_table_not_json(experiment):
    root, _ = experiment
    md = (build_report(root) / "report.md").read_text()
    cells = [cells_of(line) for line in md.splitlines()]
    assert ["data", "name", "iris"] in cells and ["train", "seeds", "0, 1, 2"] in cells
    assert '"iris"' not in md and "[0, 1, 2]" not in md


def test_table_writers_escape_their_formats():
    from loopnets.report.tables import Table, to_html, to_latex, to_markdown

    table = Table(["Model", "a|b"], [["x_1 & <y>", "0.5 ± 0.1"], ["z", "—"]], {1})
    md = to_markdown(table)
    assert "a\\|b" in md and md.splitlines()[1].startswith("|:--") and md.splitlines()[1].endswith("-:|")
    page = to_html(table, uuid="t")
    assert "x_1 &amp; &lt;y&gt;" in page and "<y>" not in page and 'class="data row1 col0 block-start"' in page
    tex = to_latex(table, "caption")
    assert "x\\_1 \\& <y> & 0.5 $\\pm$ 0.1 \\\\" in tex and "z & --- \\\\" in tex
    assert tex.count("\\midrule") == 2 and tex.index("\\midrule", tex.index("x\\_1")) < tex.index("z &")


def test_html_page_is_autoescaped_and_keeps_code_spans(tmp_path):
    from loopnets.report.page import Paragraph, render_html, render_markdown

    blocks = [Paragraph("<script>alert(1)</script> see `a<b`")]
    page = render_html(blocks, "t & <u>", tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<code>a&lt;b</code>" in page
    assert "<title>t &amp; &lt;u&gt; - loopnets report</title>" in page
    assert render_markdown(blocks) == "<script>alert(1)</script> see `a<b`\n"


def test_modes_page_shows_na_for_a_single_seed():
    from conftest import load_page_builder

    builder = load_page_builder("docs/build_modes.py")
    assert builder.fmt([0.9]) == "0.9 ± n/a"
    assert builder.fmt([0.5, 0.7], scale=100) == "60.0 ± 14.1"
