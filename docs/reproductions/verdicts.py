"""Verdict rules for the reproduction pages' claims: a chance floor, seed noise, compound claims.

Every rule returns a `Verdict` whose outcome is "agrees", "disagrees" or "inconclusive" and whose
evidence prints the numbers it was judged on. The floor:
- noise: comparisons are paired over the seeds both sides share and judged on the 95 % paired t
  interval of the mean difference, the generic report's rule (`loopnets.report.verdicts.paired`);
  the number of seeds is stated. An interval that reaches the other side of zero (or of `margin`)
  is "inconclusive", never "agrees"; fewer than two shared seeds is "inconclusive";
- chance: a claim about a model's performance is inconclusive when the model is not better than
  chance beyond noise (accuracy: 1/classes or the majority class's share, whichever is higher;
  regression: the RMSE of predicting the validation targets' mean), judged by the same interval;
- compound claims: `all_of` judges each half on its own; the whole agrees only when every half
  does, disagrees when any half disagrees, and is inconclusive otherwise; `any_of` ("and/or")
  agrees when a part agrees and none disagrees;
- bounded claims ("no more than a negligible change", "on par"): `at_most` judges the whole paired
  interval against the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from loopnets.report.verdicts import CONFIDENCE
from loopnets.report.verdicts import paired as paired_t

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
LEVEL = CONFIDENCE

SeedValues = Mapping[int, float]  # seed -> the value of one run


@dataclass(frozen=True)
class Verdict:
    claim: str
    outcome: str
    evidence: str
    parts: tuple["Verdict", ...] = field(default=())

    def markdown(self) -> str:
        """One line, or the line and an indented line per part."""
        head = f"**{self.outcome}**: {self.claim} ({self.evidence})"
        return "\n".join([head] + [f"  - {p.markdown()}" for p in self.parts])


@dataclass(frozen=True)
class Interval:
    """A mean paired difference and its 95 % paired t interval over n seeds."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        return (f"{self.mean:+.{digits}f}, {LEVEL:.0%} interval [{self.low:+.{digits}f}, {self.high:+.{digits}f}], "
                f"n = {self.n} seeds")


def paired(a: SeedValues, b: SeedValues) -> Interval | None:
    """b - a over the seeds both hold; None below two shared seeds (no noise estimate)."""
    n, mean, low, high, _ = paired_t(dict(b), dict(a), higher_is_better=True)
    return None if low is None or high is None else Interval(mean, low, high, n)


def above_chance(values: SeedValues, chance: float, higher_is_better: bool = True) -> tuple[bool, str]:
    """Whether the runs beat `chance` beyond noise (the whole interval on the better side)."""
    iv = paired({s: chance for s in values}, values)
    if iv is None:
        return False, f"{len(values)} seed(s): no noise estimate"
    ok = iv.low > 0 if higher_is_better else iv.high < 0
    return ok, (f"mean {chance + iv.mean:.3f} [{chance + iv.low:.3f}, {chance + iv.high:.3f}] vs chance {chance:.3f}, "
                f"n = {iv.n}")


def compare(claim: str, a: SeedValues, b: SeedValues, expect: str, margin: float = 0.0,
            floor: tuple[SeedValues, float, bool] | None = None, digits: int = 3) -> Verdict:
    """The claim "b is `expect` than a" ("higher" or "lower"), paired over shared seeds.

    margin: the difference must exceed it to count (e.g. one validation sample's accuracy).
    floor: (values, chance, higher_is_better): when those runs are not beyond chance the claim is
    inconclusive (a drop from chance level means nothing).
    """
    if expect not in ("higher", "lower"):
        raise ValueError(f"expect must be 'higher' or 'lower', not {expect!r}")
    if floor is not None:
        ok, text = above_chance(*floor)
        if not ok:
            return Verdict(claim, INCONCLUSIVE, f"at chance: {text}")
    iv = paired(a, b)
    if iv is None:
        return Verdict(claim, INCONCLUSIVE, f"{len(set(a) & set(b))} shared seed(s): no noise estimate")
    sign = 1.0 if expect == "higher" else -1.0
    low, high = sorted((sign * iv.low, sign * iv.high))
    outcome = AGREES if low > margin else DISAGREES if high < -margin else INCONCLUSIVE
    within = f", margin {margin:.{digits}f}" if margin else ""
    return Verdict(claim, outcome, f"paired difference {iv.text(digits)}{within}")


def all_of(claim: str, parts: Sequence[Verdict]) -> Verdict:
    """A compound claim: each part judged on its own."""
    if not parts:
        return Verdict(claim, INCONCLUSIVE, "no part could be judged")
    outcomes = [p.outcome for p in parts]
    outcome = (DISAGREES if DISAGREES in outcomes else AGREES if all(o == AGREES for o in outcomes) else INCONCLUSIVE)
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in (AGREES, DISAGREES, INCONCLUSIVE) if o in outcomes)
    return Verdict(claim, outcome, f"{len(parts)} parts: {counts}", tuple(parts))


def timing_measurable(claim: str, independent: Sequence[int]) -> Verdict | None:
    """Inconclusive when a side's per-epoch times were not measured independently (seeds / variants
    trained in one batched call share one clock); None when every side has >= 2 measurements."""
    if min(independent, default=0) >= 2:
        return None
    return Verdict(claim, INCONCLUSIVE, f"timed together: {min(independent, default=0)} independent measurement(s) "
                                        "per variant, so no per-model time and no noise estimate")


def any_of(claim: str, parts: Sequence[Verdict]) -> Verdict:
    """An "and/or" claim: agrees when some part agrees and none disagrees; disagrees when every part does."""
    outcomes = [p.outcome for p in parts]
    outcome = (AGREES if AGREES in outcomes and DISAGREES not in outcomes
               else DISAGREES if outcomes and all(o == DISAGREES for o in outcomes) else INCONCLUSIVE)
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in (AGREES, DISAGREES, INCONCLUSIVE) if o in outcomes)
    return Verdict(claim, outcome, f"either part suffices; {len(parts)} parts: {counts}", tuple(parts))


def at_most(claim: str, a: SeedValues, b: SeedValues, bound: float, two_sided: bool = False,
            floor: tuple[SeedValues, float, bool] | None = None, digits: int = 4) -> Verdict:
    """"a - b stays below `bound`" (b's loss improves on a's, or b's accuracy falls below a's, by no
    more than `bound`); two_sided: "a and b differ by no more than `bound`". Judged on the paired
    interval of a - b: agrees when the whole interval lies within the bound, disagrees when it lies
    wholly beyond it, inconclusive otherwise; `floor` as in `compare`."""
    if floor is not None:
        ok, text = above_chance(*floor)
        if not ok:
            return Verdict(claim, INCONCLUSIVE, f"at chance: {text}")
    iv = paired(b, a)  # a - b
    if iv is None:
        return Verdict(claim, INCONCLUSIVE, f"{len(a.keys() & b.keys())} shared seed(s): no noise estimate")
    if two_sided:
        inside, outside = -bound < iv.low and iv.high < bound, iv.low > bound or iv.high < -bound
    else:
        inside, outside = iv.high < bound, iv.low > bound
    outcome = AGREES if inside else DISAGREES if outside else INCONCLUSIVE
    return Verdict(claim, outcome, f"paired difference {iv.text(digits)}, bound {'±' if two_sided else ''}{bound:.{digits}f}")
