"""Rebuild every results page from the committed results, offline (`make pages`).

    python docs/reproductions/pages.py [--results-dir docs/reproductions/results] [--allow-missing]

The pages: the four reproduction pages (docs/reproductions/{lavik,hershey,caswell,kemmerling}.md)
and docs/modes.md. Each needs the experiments of its configs (`name` in configs/<dir>/*.toml)
collected under results/<experiment>/ (collect.py). A page whose results are all there is rebuilt
by its builder (`--runs-dir RESULTS`). A page with results missing is left as it is and listed
with the missing experiments and the commands that produce them; every page here is partial: it is
rebuilt from what is there (its sections for the rest say "not run yet") and its missing experiments are
listed too. Exit status 0 when every page is complete, 1 when any experiment is missing (0 with
--allow-missing), 2 when a builder fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass(frozen=True)
class Page:
    page: str  # relative to the repository root
    builder: str
    configs: str  # configs/<dir>
    partial: bool = False  # the builder writes a page from whatever is collected
    optional: tuple[str, ...] = ()  # experiments the page does without (with the reason)
    why_optional: str = ""


PAGES = (
    Page("docs/reproductions/lavik.md", "docs/reproductions/build_lavik.py", "configs/lavik", partial=True,
         optional=("lavik-fashion-mnist-tiny-cnn",),
         why_optional="Fashion-MNIST is read from a user's directory, which this repository cannot hold"),
    Page("docs/reproductions/hershey.md", "docs/reproductions/build_hershey.py", "configs/hershey", partial=True),
    Page("docs/reproductions/caswell.md", "docs/reproductions/build_caswell.py", "configs/caswell", partial=True,
         optional=("caswell-cifar10-batch32", "caswell-cifar10-batch5"),
         why_optional="CIFAR-10 is read from a user's directory, which this repository cannot hold"),
    Page("docs/reproductions/kemmerling.md", "docs/reproductions/build_kemmerling.py", "configs/kemmerling",
         partial=True),
    Page("docs/modes.md", "docs/build_modes.py", "configs/modes", partial=True),
    Page("docs/thinking-longer.md", "docs/build_thinking.py", "configs/thinking", partial=True,
         optional=("thinking-prefix-sums-gpu", "thinking-mazes-gpu"),
         why_optional="DeepThinking's full scale is a GPU config, not run here"),
)


def experiments(page: Page, root: Path = ROOT) -> dict[str, str]:
    """experiment name -> its config path, for every config of the page."""
    out = {}
    for path in sorted((root / page.configs).glob("*.toml")):
        name = tomllib.loads(path.read_text()).get("name")
        if name:
            out[name] = str(path.relative_to(root))
    return out


def missing(page: Page, results_dir: Path, root: Path = ROOT) -> dict[str, str]:
    """The page's experiments with no collected results.json: name -> the command that produces them."""
    return {name: f"loopnets run {config} --workers 2 && python docs/reproductions/collect.py runs {name}"
            for name, config in experiments(page, root).items()
            if name not in page.optional and not (results_dir / name / "results.json").is_file()}


def rebuild(results_dir: Path, allow_missing: bool = False, root: Path = ROOT, out=print, only: Page | None = None) -> int:
    """Rebuild the pages (or `only` that one); `out` receives each line of the report."""
    status = 0
    for page in PAGES if only is None else (only,):
        absent = missing(page, results_dir, root)
        present = [n for n in experiments(page, root) if n not in absent and n not in page.optional]
        if absent and not (page.partial and present):
            out(f"{page.page}: NOT rebuilt, {len(absent)} of {len(experiments(page, root))} experiments have no "
                f"committed results:")
        elif absent:
            out(f"{page.page}: rebuilt from {len(present)} experiments; {len(absent)} have no committed results "
                f"(their sections say \"not run yet\"):")
        if absent:
            for name, command in absent.items():
                out(f"    {name}: {command}")
            status = max(status, 0 if allow_missing else 1)
            if not (page.partial and present):
                continue
        if page.optional:
            out(f"{page.page}: without {', '.join(page.optional)} ({page.why_optional})")
        done = subprocess.run([sys.executable, str(root / page.builder), "--runs-dir", str(results_dir),
                               "--out", str(root / page.page)], cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            out(f"{page.page}: the builder failed:\n{done.stderr.strip()}")
            status = 2
        elif not absent:
            out(f"{page.page}: rebuilt")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--allow-missing", action="store_true", help="exit 0 although experiments are missing")
    args = parser.parse_args(argv)
    return rebuild(args.results_dir.resolve(), args.allow_missing)


if __name__ == "__main__":
    sys.exit(main())
