"""benchmarks/RESULTS.md: the machine, the method, the target verdicts and the tables."""

from __future__ import annotations

import datetime
import os
import platform

import torch

from loopnets.experiments.provenance import cpu_model, load_average
from targets import Check
from thesis import label


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = cpu_model() or "unknown CPU"
    load = ", ".join(f"{v:.2f}" for v in load_average() or []) or "n/a"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu,
            "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load": load, "gpu": gpu}


def markdown(info: dict, command: str, quick: bool, thesis: list[dict], unroll: list[dict], images: list[dict],
             checks: list[Check], figure: str | None, grid: str | None = None) -> str:
    passed = sum(c.passed for c in checks)
    lines = [
        "# loopnets benchmarks",
        "",
        f"Written by `{command}`" + (" (--quick: tiny sizes, the numbers mean nothing)" if quick else "") + ".",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['cpu']}, {info['cores']} logical CPUs, {info['platform']}; load average (1, 5, 15 min) "
        f"{info['load']} when the run ended",
        f"- torch {info['torch']}, Python {info['python']}, {info['threads']} torch thread(s), float32"
        + (f"; GPU: {info['gpu']}" if info["gpu"] else "; no GPU"),
        "- Method: the contenders run in turn in one process, their order reversed every other round, so "
        "they see the same background load; cells are medians over rounds (the first epoch of each "
        "training call is a warm-up and is dropped); a ratio is a ratio of two such medians. "
        "`neurons` figures are the issue's medians for the Rust framework on this machine.",
        "- Hand-written: the plain PyTorch a user would write instead (nn.Sequential, a for-loop over the unrolls, "
        "torch.optim.Adam with its defaults, randperm + index slicing, `loss.item()` per step); *tuned*: the same "
        "loop with fused Adam, no per-step `.item()` and one gather per epoch (benchmarks/handwritten.py).",
        "",
        f"## Targets: {passed} of {len(checks)} pass",
        "",
        "```",
        *(c.line() for c in checks),
        "```",
        "",
    ]
    for device in _devices(thesis):
        rows = [r for r in thesis if r["device"] == device]
        lines += [
            f"## Thesis workloads ({device}): ms per training epoch",
            "",
            "FTIR: 529 synthetic FTIR-shaped spectra (571 features, 28 classes), batch 32, Adam(1e-3); iris: 150 samples, "
            "batch 1, Adam(1e-4, 0.95, 0.999, 1e-7). Layer sizes of thesis Table 4.1, loops of sec 4.2.",
            "",
            "| workload | variant | loopnets | hand-written | loopnets / hand-written | tuned hand-written | "
            "loopnets / tuned | neurons | neurons / loopnets |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            neurons = f"{r['neurons_ms']:g}" if r["neurons_ms"] else "-"
            speed = f"{r['neurons_speedup']:.2f}x" if r["neurons_speedup"] else "-"
            lines.append(
                f"| {r['workload']} | {label(r['variant'], r['unroll'])} | {r['loopnets_ms']:.2f} | "
                f"{r['handwritten_ms']:.2f} | {r['vs_handwritten']:.2f} | {r['tuned_ms']:.2f} | {r['vs_tuned']:.2f} | "
                f"{neurons} | {speed} |"
            )
        lines.append("")
    for device in _devices(unroll):
        rows = [r for r in unroll if r["device"] == device]
        r0 = rows[0]
        lines += [
            f"## Unroll scaling ({device}): ms per training step, memory of forward + backward",
            "",
            f"One loop over Linear({r0['width']}) - ReLU - Linear({r0['width']}) - Tanh, linear head, batch "
            f"{r0['batch']}, fused Adam for both; loopnets is `ln.Loop` + `ln.tie_` in a plain training loop. "
            "Memory from benchmarks/memory.py (a subprocess per row): *saved* = bytes autograd keeps for backward, "
            "*peak* = the most memory forward + backward holds beyond the model and data (CPU: bytes malloc has "
            "handed out, sampled after every module call and every autograd save / unpack; CUDA: the allocator's "
            "peak), *rss* = the rise of resident memory "
            "(also counts what the C allocator keeps after frees), *params* = the loop's parameters (COUPLE holds k "
            "copies).",
            "",
            "| mode | unroll | loopnets | forward | backward | step + tie | hand-written | loopnets / hand-written "
            "| saved MiB | peak MiB | rss MiB | params MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            mem = [f"{r[k] / 2**20:.2f}" if k in r else "-" for k in ("saved_bytes", "peak_bytes", "rss_bytes", "param_bytes")]
            lines.append(
                f"| {r['mode']} | {r['unroll']} | {r['loopnets_ms']:.2f} | {r['loopnets_forward_ms']:.2f} | "
                f"{r['loopnets_backward_ms']:.2f} | {r['loopnets_step_ms']:.2f} | {r['handwritten_ms']:.2f} | "
                f"{r['vs_handwritten']:.2f} | {' | '.join(mem)} |"
            )
        lines.append("")
        if figure and device == "cpu":
            lines += [f"Figure: `{figure}`.", ""]
    for r in images:
        lines += [
            f"## Image workload ({r['device']}): ms per training step",
            "",
            f"Loopy CNN (Caswell), {r['image']}x{r['image']} images of `synthetic_cifar`, {r['filters']} filters, "
            f"Tied x{r['unroll']}, batch {r['batch']}, Adam(1e-3): `ln.fit` against the hand-written loop.",
            "",
            "| loopnets | hand-written | loopnets / hand-written |" + (" loopnets peak MiB | hand-written peak MiB |"
                                                                      if "loopnets_peak_bytes" in r else ""),
            "|---:|---:|---:|" + ("---:|---:|" if "loopnets_peak_bytes" in r else ""),
            f"| {r['loopnets_ms']:.1f} | {r['handwritten_ms']:.1f} | {r['vs_handwritten']:.2f} |"
            + (f" {r['loopnets_peak_bytes'] / 2**20:.1f} | {r['handwritten_peak_bytes'] / 2**20:.1f} |"
               if "loopnets_peak_bytes" in r else ""),
            "",
        ]
    if grid:
        lines += ["<!-- bench:grid:start -->", grid, "<!-- bench:grid:end -->", ""]
    lines += ["Why the targets that fail do: docs/performance.md.", ""]
    return "\n".join(lines)


def grid_block(grid: dict, checks: list[Check], command: str, quick: bool) -> str:
    """The iris grid's section (RESULTS.md and docs/performance.md), with its machine and its verdicts."""
    import grid as grid_suite

    info = machine()
    lines = [f"Written by `{command}`" + (" (--quick: 2 seeds, 2 epochs; the numbers mean nothing)" if quick else "")
             + f" on {info['date']}: {info['cpu']}, {info['cores']} CPUs, torch {info['torch']}; load average "
             f"{info['load']} when it ended (the machine was shared: compare the two ways, run side by side).", "",
             "```", *(c.line() for c in checks), "```", "", *grid_suite.markdown(grid)]
    return "\n".join(lines)


def _devices(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["device"] for r in rows))


def doc_blocks(checks: list[Check], unroll: list[dict], results_path: str) -> dict[str, str]:
    """The tables docs/performance.md shows between its `<!-- bench:NAME:start/end -->` markers."""
    info = machine()
    stamp = (f"From `loopnets bench` on {info['date']}: {info['cpu']}, {info['cores']} CPUs, torch {info['torch']}, "
             f"{info['threads']} thread(s), load average {info['load']}. All cases: `{_relative(results_path)}`.")
    kinds: dict[str, list[Check]] = {}
    for c in checks:
        kinds.setdefault(c.target, []).append(c)
    lines = [stamp, "", "| target | cases passing | measured (worst ... best) |", "|---|---:|---|"]
    for target, cs in kinds.items():
        values = sorted(c.value for c in cs)
        low_is_good = cs[0].bound.startswith("<=")
        worst, best = (values[-1], values[0]) if low_is_good else (values[0], values[-1])
        failing = ", ".join(c.case for c in cs if not c.passed)
        lines.append(f"| {target} ({cs[0].bound}) | {sum(c.passed for c in cs)} of {len(cs)} | {worst:.2f} ... "
                     f"{best:.2f}" + (f"; failing: {failing}" if failing else "") + " |")
    blocks = {"targets": "\n".join(lines)}
    if unroll:
        r0 = unroll[0]
        rows = [stamp, "", f"One loop over Linear({r0['width']}) - ReLU - Linear({r0['width']}) - Tanh, batch "
                f"{r0['batch']}; ms per training step (forward, backward, optimizer step + re-tie) and MiB.", "",
                "| mode | unroll | ms / step | backward ms | hand-written ms | loopnets / hand-written | peak MiB | "
                "saved MiB | params MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in unroll:
            mem = [f"{r[k] / 2**20:.2f}" if k in r else "-" for k in ("peak_bytes", "saved_bytes", "param_bytes")]
            rows.append(f"| {r['mode']} | {r['unroll']} | {r['loopnets_ms']:.2f} | {r['loopnets_backward_ms']:.2f} | "
                        f"{r['handwritten_ms']:.2f} | {r['vs_handwritten']:.2f} | {' | '.join(mem)} |")
        blocks["unroll"] = "\n".join(rows)
    return blocks


def kept_block(path, name: str) -> str | None:
    """What stands between a file's `<!-- bench:NAME:start/end -->` markers (None: no file or no markers)."""
    text = path.read_text() if path.is_file() else ""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def refresh_blocks(text: str, blocks: dict[str, str], append: bool = False) -> str:
    """Replace what stands between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` for each block
    (append: a block without markers is added at the end, with them)."""
    for name, body in blocks.items():
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        if append and not (start in text and end in text):
            text = text.rstrip("\n") + f"\n\n{start}\n{body}\n{end}\n"
        elif start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    return text


def _relative(path: str) -> str:
    from pathlib import Path

    here = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(here))
    except ValueError:
        return path
