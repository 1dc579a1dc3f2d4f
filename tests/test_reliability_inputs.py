"""Issue 13, classes 2 and 4 on the config side: values that later stages cannot handle are refused
by validation, naming the key, the value and the fix; an absurd unroll or width is refused with its
memory estimate before anything is built."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopnets.experiments import ConfigError, expand_variants, load_config, validate
from loopnets.experiments import budget, runner
from loopnets.experiments.config import MAX_NAME, MAX_SEED

ROOT = Path(__file__).resolve().parents[1]


def refused(overrides: list[str], path=None) -> str:
    with pytest.raises(ConfigError) as err:
        validate(load_config(path, overrides))
    return str(err.value)


# --- class 4: validation checks what the later stages assume --------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        # booleans are never numbers, in any int / float field or list of them
        ("model.loop=[true, 2]", r"model.loop\[0\] must be int; got bool True \(true / false are not numbers; write 1"),
        ("train.epochs=true", r"train.epochs must be int; got bool True \(true / false are not numbers"),
        ("train.batch_size=false", r"train.batch_size must be int; got bool False .*write 0"),
        ("train.seeds=[0, true]", r"train.seeds\[1\] must be int; got bool True"),
        ("train.early_stopping=true", r"train.early_stopping must be int or none; got bool True"),
        ("data.split_seed=true", r"data.split_seed must be int; got bool True"),
        ("variants=[{method='couple', unroll=[2, true]}]", r"variants\[0\].unroll\[1\] must be int; got bool True"),
        ("variants=[{method='couple', unroll=true}]", r"variants\[0\].unroll must be int or list of int; got bool True"),
        ("variants=[{method='couple', skip=[0, 1]}]", r"variants\[0\].skip\[0\] must be bool; got int 0 \(write false\)"),
        ("variants=[{method='combine', grad_scale=true}]", r"variants\[0\].grad_scale must be float or str or none; got bool"),
        ("variants=[{method='tied', random_passes=[true, 3]}]", r"variants\[0\].random_passes\[0\] must be int; got bool"),
        ("variants=[{method='tied', pass_weights=[1, true]}]", r"variants\[0\].pass_weights\[1\] must be float; got bool"),
        ("train.optimizer_args.lr=true", r"train.optimizer_args.lr must be a number \(default 0.001\); got bool True"),
        ("train.optimizer_args.betas=[true, 0.9]", r"train.optimizer_args.betas: the list \[True, 0.9\] mixes true / false "
                                                   r"with numbers"),
        ("train.optimizer_args.amsgrad=1", r"train.optimizer_args.amsgrad must be true or false; got int 1"),
        # numbers later stages cannot use
        ("train.optimizer_args.lr=nan", r"train.optimizer_args.lr: nan is not allowed; give a finite number"),
        ("train.epochs=inf", r"train.epochs must be int; got float inf \(nan and inf are not allowed"),
        ("train.batch_size=8.0", r"train.batch_size must be int; got float 8.0 \(write 8 without the decimal point\)"),
        ("train.epochs='3'", r"train.epochs must be int; got str '3' \(write the number without quotes\)"),
        # seeds: torch.manual_seed's range, and run folders are seed=<n>, n >= 0
        ("train.seeds=[-1]", r"train.seeds\[0\] = -1 is out of range: a seed is an integer in \[0, 2\^63\)"),
        (f"train.seeds=[0, {2**63}]", r"train.seeds\[1\] = 9223372036854775808 is out of range: TOML's integers are 64-bit"),
        (f"train.seeds=[0, {2**63 - 1}, 5]", None),  # the largest seed is accepted
        (f"train.epochs={2**64}", r"train.epochs = 18446744073709551616 is out of range: TOML's integers are 64-bit"),
        ("data.split_seed=-3", r"data.split_seed = -3 is out of range: the data split takes a seed in \[0, 2\^32\)"),
        (f"data.split_seed={2**32}", r"data.split_seed = 4294967296 is out of range"),
        # names become folders
        ("name='a/b'", r"name = 'a/b' is not a portable folder name: .*letters, digits and \. _ - = \+ only.*e.g. 'a-b'"),
        ("name='..'", r"name = '\.\.' is not a portable folder name"),
        ("name='.hidden'", r"name = '\.hidden' is not a portable folder name.*not starting with a dot"),
        ("name='has space'", r"name = 'has space' is not a portable folder name.*e.g. 'has-space'"),
        ("name='nul\u0000byte'", r"is not a portable folder name"),
        ("name='café'", r"name = 'café' is not a portable folder name"),
        (f"name='{'x' * (MAX_NAME + 1)}'", rf"is {MAX_NAME + 1} characters long: .*at most {MAX_NAME} characters"),
        ("variants=[{method='ffn', name='a b'}]", r"variants\[0\].name = 'a b' is not a portable folder name"),
        ("variants=[{method='ffn', name='x/..'}]", r"variants\[0\].name = 'x/\.\.' is not a portable folder name"),
    ],
)
def test_values_later_stages_cannot_handle_are_refused_with_key_value_and_fix(override, message):
    if message is None:  # a boundary value that is accepted
        assert load_config(None, [override])
        return
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_the_limits_themselves_are_accepted():
    exp = load_config(None, [f"train.seeds=[0, {MAX_SEED - 1}]", f"data.split_seed={2**32 - 1}",
                             f"name='{'a' * MAX_NAME}'", "variants=[{method='ffn', name='v_1.2=+-x'}]"])
    assert exp.train.seeds == [0, MAX_SEED - 1]
    assert [v.name for v in expand_variants(exp)] == ["v_1.2=+-x"]
    # true / false where a bool is meant, and lists of them, stay fine
    assert load_config(None, ["variants=[{method='couple', skip=[false, true]}]"]).variants[0].skip == [False, True]
    assert load_config(None, ["train.optimizer_args.amsgrad=true"]).train.optimizer_args["amsgrad"] is True


def test_negative_seed_cannot_reach_a_run_folder(tmp_path):
    # The report reads seed=<n> folders with n >= 0: a negative seed used to train and then drop out
    # of the statistics silently; now the run does not start.
    from loopnets.cli import main

    config = tmp_path / "exp.toml"
    config.write_text('name = "neg"\n[train]\nepochs = 1\nseeds = [-1, 0]\n')
    assert main(["run", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--no-report"]) == 2
    assert not (tmp_path / "runs").exists()


def test_toml_errors_keep_line_and_column(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('name = "x"\n[train]\nepochs = \n')
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .*line 3, column"):
        load_config(config)


# --- class 2: an absurd unroll or width is refused with its memory estimate --------------------------


@pytest.mark.parametrize(
    "overrides, what",
    [
        (["variants=[{method='couple', unroll=1000000000}]"], r"variant 'couple-x1000000000' would need about [\d,.]+ GiB"),
        (["variants=[{method='combine', unroll=1000000000}]"], r"1,000,000,000 passes"),  # activations, no copies
        (["model.layers=[{type='dense', units=1000000000}]", "model.loop=[0, 0]",
          "variants=[{method='ffn'}]"], r"8,000,000,000 parameters x 4"),
    ],
    ids=["couple-unroll", "combine-unroll", "width"],
)
def test_absurd_unroll_or_width_refused_with_an_estimate_before_building(overrides, what):
    start = time.perf_counter()
    message = refused(["train.seeds=[0]", *overrides])
    assert time.perf_counter() - start < 10  # the real build would take hours or be killed for memory
    assert "would need about" in message and "the limit is" in message
    assert "set train.max_memory_gb = " in message
    assert re.search(what, message), message


def test_inn_family_absurd_size_refused():
    message = refused(["model.inn.trainable=100000000000"], ROOT / "configs/hershey/fixed-point.toml")
    assert "variant 'inn' would need about" in message and "train.max_memory_gb" in message


def test_memory_limit_is_a_setting():
    exp = load_config(None, ["train.seeds=[0]"])
    assert validate(exp)  # the default experiment fits
    message = refused(["train.seeds=[0]", "train.max_memory_gb=0.00001"])
    assert "the limit is 0.0 GiB (train.max_memory_gb)" in message
    with pytest.raises(ConfigError, match="train.max_memory_gb must be > 0"):
        load_config(None, ["train.max_memory_gb=0"])
    ram = budget.physical_memory()
    limit, source = budget.memory_limit(exp)
    if ram is not None:
        assert limit == int(ram * budget.MEMORY_FRACTION) and "of this machine's" in source


@pytest.mark.parametrize("method", ["couple", "combine"])
def test_estimate_extrapolated_from_two_passes_matches_the_real_network(method):
    exp = load_config(None, ["train.seeds=[0]", f"variants=[{{method='{method}', unroll=5}}]"])
    (variant,) = expand_variants(exp)
    split = runner.load_split(exp)
    est = budget.estimate(exp, variant, split, runner.build_model)
    net = runner.build_model(exp, variant, split)
    assert est.parameters == sum(p.numel() for p in net.parameters())
    assert est.passes == 5 and est.bytes_per_element == 4 and est.activations > 0
    # activations grow with the passes: one batch through 5 passes holds more than through 1
    one = budget.estimate(exp, dataclasses.replace(variant, unroll=1), split, runner.build_model)
    assert est.activations > one.activations


def test_cli_check_refuses_an_absurd_unroll(tmp_path):
    config = tmp_path / "huge.toml"
    config.write_text('name = "huge"\n[[variants]]\nmethod = "couple"\nunroll = 1000000000\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "loopnets.cli", "check", str(config)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("loopnets: error: variant 'couple-x1000000000' would need about ")
    assert "GiB" in done.stderr and "Traceback" not in done.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    "override, message",
    [
        ("variants=[{method='implicit', unroll=5000}]", r"variant 'implicit-x5000': unroll 5,000 is more than 1000 passes"),
        ("variants=[{method='tied', unroll=3, random_passes=[1, 100000]}]", r"random_passes 100,000 is more than 1000"),
    ],
)
def test_more_passes_than_max_passes_refused_even_when_memory_fits(override, message):
    # an implicit loop's activations are not measured on the meta device, a tied loop's fit: the
    # pass cap refuses what would take hours per epoch
    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, ["train.seeds=[0]", override]))


def test_huge_count_with_the_memory_limit_raised_is_still_refused_before_building():
    start = time.perf_counter()
    message = refused(["train.seeds=[0]", "train.max_memory_gb=1e9", "variants=[{method='couple', unroll=1000000000}]"])
    assert "unroll 1,000,000,000 is more than 1000 passes" in message
    assert time.perf_counter() - start < 10


def test_unroll_sweep_bounded():
    with pytest.raises(ConfigError, match=r"train.unroll_sweep = 100000 is more than 1000 passes"):
        load_config(None, ["train.unroll_sweep=100000"])


def test_run_refuses_an_absurd_width_before_training(tmp_path, capsys):
    from loopnets.cli import main

    config = tmp_path / "wide.toml"
    config.write_text('name = "wide"\n[model]\nlayers = [{ type = "dense", units = 1000000000 }]\nloop = [0, 0]\n'
                      '[[variants]]\nmethod = "ffn"\n')
    start = time.perf_counter()
    assert main(["run", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert err.startswith("loopnets: error: variant 'ffn' would need about ") and "train.max_memory_gb" in err
    assert not (tmp_path / "runs").exists()  # nothing started
