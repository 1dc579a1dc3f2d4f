"""Fashion-MNIST and the full MNIST from IDX files (fabricated here in the real format): reading,
layouts, sizes, every malformed file named, and the run/check path of a config that needs them."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from loopnets.cli import main
from loopnets.data.idx import FASHION_CLASSES, FILES, IdxFileError, load_fashion_mnist, load_mnist_files, read_idx
from loopnets.faults import FileFault

ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 00 00, type 08 (unsigned byte), the number of dimensions, big-endian sizes, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, n_train: int = 6, n_val: int = 4, gz: bool = False, seed: int = 0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": np.arange(n_train) % 10,
              "val_images": rng.integers(0, 256, (n_val, 28, 28)), "val_labels": (np.arange(n_val) + 3) % 10}
    for key, stem in FILES.items():
        data = idx_bytes(arrays[key])
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_reads_the_four_idx_files_in_both_layouts(tmp_path, gz):
    arrays = write_idx(tmp_path, gz=gz)
    dense = load_fashion_mnist(tmp_path)
    assert dense.x_train.shape == (6, 784) and dense.x_val.shape == (4, 784) and dense.classes == FASHION_CLASSES
    assert torch.equal(dense.y_train, torch.as_tensor(arrays["train_labels"]))
    assert torch.equal(dense.y_val, torch.as_tensor(arrays["val_labels"]))
    # row-major 28 x 28, pixels / 255
    np.testing.assert_allclose(dense.x_train[1].numpy(), arrays["train_images"][1].reshape(-1) / 255.0, rtol=1e-6)
    image = load_mnist_files(tmp_path, layout="image", train_size=2, val_size=3, dtype=torch.float64)
    assert image.x_train.shape == (2, 1, 28, 28) and image.x_val.shape == (3, 1, 28, 28)
    assert image.x_train.dtype == torch.float64 and image.classes == tuple("0123456789")
    np.testing.assert_allclose(image.x_val[2, 0].numpy(), arrays["val_images"][2] / 255.0)


def test_read_idx_keeps_the_headers_shape(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)


def test_a_missing_folder_or_file_says_which_and_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fashion_mnist not found: the directory .*nowhere does not exist.*"
                                                r"zalandoresearch.*--data-dir"):
        load_fashion_mnist(tmp_path / "nowhere")
    write_idx(tmp_path)
    (tmp_path / FILES["val_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"has no t10k-labels-idx1-ubyte \(nor t10k-labels-idx1-ubyte.gz\)"):
        load_mnist_files(tmp_path)


@pytest.mark.parametrize("content, words", [
    (b"", "too short for an IDX header"),
    (bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + b"\0" * 16, "not an IDX file of unsigned bytes"),
    (bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big"), "the header names 3 dimensions"),
    (bytes([0, 0, 0x08, 1]) + (9).to_bytes(4, "big") + b"\1" * 5, "needs 9 data bytes, the file has 5"),
])
def test_a_malformed_file_is_named_with_the_fix(tmp_path, content, words):
    write_idx(tmp_path)
    (tmp_path / FILES["train_labels"]).write_bytes(content)
    with pytest.raises(IdxFileError, match=words) as err:
        load_fashion_mnist(tmp_path)
    assert isinstance(err.value, FileFault) and FILES["train_labels"] in str(err.value)
    assert "get the four IDX files again" in str(err.value)


def test_mismatched_counts_shapes_labels_and_sizes_are_refused(tmp_path):
    write_idx(tmp_path)
    (tmp_path / FILES["val_labels"]).write_bytes(idx_bytes(np.zeros(3)))  # 4 images, 3 labels
    with pytest.raises(IdxFileError, match=r"expected \(n, 28, 28\) images and n labels"):
        load_fashion_mnist(tmp_path)
    (tmp_path / FILES["val_labels"]).write_bytes(idx_bytes(np.array([0, 1, 2, 10])))
    with pytest.raises(IdxFileError, match=r"holds label 10, outside 0..9"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path)
    with pytest.raises(ValueError, match=r"train_size must be an integer in 1..6"):
        load_fashion_mnist(tmp_path, train_size=7)
    with pytest.raises(ValueError, match="layout must be one of"):
        load_fashion_mnist(tmp_path, layout="grid")


def test_the_fashion_config_checks_without_the_files_and_runs_with_them(tmp_path, capsys):
    config = str(ROOT / "configs" / "lavik" / "fashion-mnist-tiny-cnn.toml")
    assert main(["check", config]) == 0
    assert "lavik-fashion-mnist-tiny-cnn" in capsys.readouterr().out
    assert main(["run", config, "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert "--data-dir DIR" in capsys.readouterr().err
    write_idx(tmp_path / "fashion", n_train=40, n_val=20)
    code = main(["run", config, "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "fashion"),
                 "--no-progress", "--no-report", "train.epochs=1", "train.seeds=[0]",
                 "variants=[{method='couple', unroll=2}]"])
    assert code == 0
    summaries = list((tmp_path / "runs" / "lavik-fashion-mnist-tiny-cnn").glob("*/seed=0/summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["status"] == "finished" and summary["val_samples"] == 20
