"""What the template-built results pages share (build_kemmerling.py, build_caswell.py): rendering a
Jinja2 template beside this file while recording every number its fields print, and the builders'
command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import jinja2

from build_lavik import Recorder
from lavik_results import Exp, load

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def render_template(template: str, fields: dict, folder: Path = HERE) -> tuple[str, set[str]]:
    """(the rendered page, the numbers the template printed through its fields); the template is read
    from `folder` (this one by default)."""
    recorder = Recorder()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), finalize=recorder, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    return env.get_template(template).render(**fields), recorder.numbers


def builder_main(render: Callable[[Path], tuple[str, set[str]]], doc: str, default_out: Path,
                 argv: list[str] | None = None, build: Callable[[Path, Path], str] | None = None) -> None:
    """`--runs-dir` (committed results by default, or a runs folder) and `--out`; writes the page
    (`build(results_dir, out)` instead of the rendered text, for a page that writes figures beside it)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", "--results-dir", dest="results_dir", type=Path, default=RESULTS,
                        help="committed results (default docs/reproductions/results) or a runs folder")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    (build or (lambda results, out: write_page(render, results, out)))(args.results_dir, args.out)
    print(f"wrote {args.out}")


def write_page(render: Callable[[Path], tuple[str, set[str]]], results_dir: Path, out: Path) -> str:
    """Render the page from `results_dir`, write it to `out` and return it."""
    text, _ = render(Path(results_dir))
    Path(out).write_text(text)
    return text


def load_experiments(results_dir: Path, names: dict[str, str]) -> dict[str, Exp]:
    """key -> the experiment `names[key]` collected (or run) in results_dir; a run folder with no report
    is left out with a note on stderr naming the command that writes it (its page says "not run yet")."""
    out = {}
    for key, name in names.items():
        exp = load(Path(results_dir), name)
        if exp is not None:
            out[key] = exp
        elif (Path(results_dir) / name / "experiment.toml").is_file():
            print(f"{name}: {Path(results_dir) / name} has no report/results.json; run `loopnets report "
                  f"{Path(results_dir) / name}` to include it", file=sys.stderr)
    return out
