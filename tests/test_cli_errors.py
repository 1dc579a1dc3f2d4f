"""Issue 13, class 3: every fault of the environment or of a file is one line and exit status 2.

`loopnets: error: <what happened>: <which file>; <what to do>`, never a traceback, and nothing
already finished is touched. A full disk and a read-only disk are real where the machine lets a
test mount a small tmpfs (root in a container usually may); elsewhere those tests skip, and the
same paths are covered by injecting the OSError at the file-write function.
"""

import errno
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_IRIS

from loopnets.cli import main
from loopnets.data.cifar import TEST_FILE, TRAIN_FILES, BatchFileError, load_cifar10
from loopnets.experiments import rundir
from loopnets.faults import FileFault, about, explain

TINY = TINY_IRIS.replace(', { method = "couple", unroll = 2 }', "")  # one variant


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(TINY)
    return path


def run(config: Path, runs: Path, *extra: str) -> int:
    return main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", *extra])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopnets: error: "), err
    assert "Traceback" not in err
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/disk (unmounted afterwards); skips where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); "
                    "the same write path is covered by test_an_injected_write_fault_is_one_line")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave_pages: int) -> Path:
    """Fill `disk` but `leave_pages` pages of 4 KiB; return the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave_pages * 4096))
    return filler


def test_a_full_disk_is_one_line_and_finished_runs_are_untouched(small_disk, config, capsys):
    runs = small_disk / "runs"
    assert run(config, runs) == 0
    exp_dir = runs / "tiny"
    rundir_seed1 = exp_dir / "ffn" / "seed=1"
    for f in rundir_seed1.iterdir():  # as if the sweep had stopped before seed 1 finished
        f.unlink()
    rundir_seed1.rmdir()
    kept = files_of(exp_dir)
    filler = fill(small_disk, leave_pages=2)  # room for the lock, not for a run folder
    capsys.readouterr()
    assert run(config, runs) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on the device" in line and "seed=1" in line and "free some space" in line
    assert files_of(exp_dir) == kept  # nothing finished touched, no partial folder left behind
    filler.unlink()
    assert run(config, runs) == 0  # space again: the same command finishes the sweep
    assert (rundir_seed1 / "summary.json").is_file()


def test_a_read_only_runs_folder_is_one_line_and_finished_runs_are_untouched(small_disk, config, capsys):
    runs = small_disk / "runs"
    assert run(config, runs, "train.seeds=[0]") == 0
    kept = files_of(runs)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only here ({remount.stderr.strip()})")
    capsys.readouterr()
    assert run(config, runs) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the file system is read-only" in line and str(runs / "tiny") in line and "--runs-dir" in line
    assert files_of(runs) == kept


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "the file system is read-only")])
def test_an_injected_write_fault_is_one_line(config, tmp_path, monkeypatch, capsys, code, words):
    runs = tmp_path / "runs"
    assert run(config, runs, "train.seeds=[0]") == 0  # a finished run, which the fault must not touch
    exp_dir = runs / "tiny"
    kept = files_of(exp_dir)
    (exp_dir / "ffn" / "seed=0" / "summary.json").rename(exp_dir / "keep.json")  # seed 0 to train again
    kept_partly = files_of(exp_dir)

    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rundir, "write_new", refuse)
    capsys.readouterr()
    assert run(config, runs, "train.seeds=[0]") == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line and "seed=0" in line
    assert files_of(exp_dir) == kept_partly
    monkeypatch.undo()
    (exp_dir / "keep.json").rename(exp_dir / "ffn" / "seed=0" / "summary.json")
    assert files_of(exp_dir) == kept


def test_a_name_too_long_for_the_file_system(config, tmp_path, capsys):
    assert run(config, tmp_path / ("x" * 300)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "too long for the file system" in line and "x" * 300 in line and "shorten" in line


def test_a_nul_byte_in_a_name(config, tmp_path, capsys):
    assert run(config, tmp_path / "ru\0ns") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "NUL byte" in line and "ru\\x00ns" in line


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes(TINY.replace('name = "tiny"', 'name = "caf\xe9"').encode("latin-1"))
    for command in (["run", str(path)], ["check", str(path)]):
        assert main(command) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(path) in line and "not UTF-8" in line and "save the file as UTF-8" in line


@pytest.mark.parametrize("content, words", [(b"", "empty (0 bytes)"),
                                            (b"this is text, not a pickle\n", "not a CIFAR-10 batch file"),
                                            (pickle.dumps({b"data": 1})[:-5], "truncated")],
                         ids=["zero-byte", "not-a-pickle", "truncated"])
def test_a_bad_cifar_batch_names_the_file(tmp_path, capsys, content, words):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*TRAIN_FILES, TEST_FILE):
        (folder / name).write_bytes(content)
    with pytest.raises(BatchFileError, match=re.escape(words)) as err:
        load_cifar10(folder)
    assert str(folder / TRAIN_FILES[0]) in str(err.value) and "download" in str(err.value)
    config = Path(__file__).resolve().parents[1] / "configs" / "caswell" / "cifar10-batch32.toml"
    assert main(["run", str(config), "--data-dir", str(folder), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress", "--no-report"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line and str(folder / TRAIN_FILES[0]) in line
    assert not (tmp_path / "runs").exists()  # refused before any folder is written


def test_report_on_a_folder_without_runs(config, tmp_path, capsys):
    exp_dir = tmp_path / "runs" / "tiny"
    exp_dir.mkdir(parents=True)
    (exp_dir / "experiment.toml").write_text(TINY)
    assert main(["report", str(exp_dir)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no finished runs" in line and str(exp_dir) in line and "loopnets run" in line
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in one_error_line(capsys.readouterr().err)


def test_explain_and_about_write_what_which_and_what_to_do(tmp_path):
    assert explain(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == \
        "no space left on the device: /x/y; free some space, or give --runs-dir a folder on another disk; " \
        "then run the same command again (finished runs are kept)"
    assert explain(FileNotFoundError("no runs in /x: expected ...")) == "no runs in /x: expected ..."
    with pytest.raises(FileFault) as fault:
        with about(tmp_path / "f", "read the thing"):
            (tmp_path / "f").read_text()
    assert fault.value.errno == errno.ENOENT and str(fault.value).startswith("cannot read the thing (no such file")
    with pytest.raises(ValueError, match="unrelated"):  # other errors pass unchanged
        with about(tmp_path, "do"):
            raise ValueError("unrelated")
    assert pickle.loads(pickle.dumps(fault.value)).args == fault.value.args  # travels from a worker


def test_the_real_command_prints_one_line_not_a_traceback(config, tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    result = subprocess.run([sys.executable, "-m", "loopnets.cli", "run", str(config), "--runs-dir",
                             str(tmp_path / ("y" * 300)), "--no-progress"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": src}, timeout=120)
    assert result.returncode == 2
    assert "too long for the file system" in one_error_line(result.stderr)
