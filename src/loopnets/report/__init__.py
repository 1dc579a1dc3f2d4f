"""Reports rebuilt from run folders: curves, probe and timing tables, HTML / Markdown / LaTeX.

`build_report(runs/<experiment>)` reads only the run folders (docs/contract-runs.md) and writes
`runs/<experiment>/report/`.
"""

from loopnets.report.page import build_report

__all__ = ["build_report"]
