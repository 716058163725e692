"""Confidence intervals of the fairness analysis (plain Python on small aggregates).

* a proportion: Wilson's score interval;
* a difference of two independent proportions: Newcombe's hybrid score interval (his method 10,
  built from the two Wilson intervals), Newcombe (1998), Statistics in Medicine 17:873-890;
* a difference of two means with unequal variances: Welch's t interval (Welch-Satterthwaite
  degrees of freedom).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of successes/n; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(
    k1: int, n1: int, k2: int, n2: int, z: float = Z95
) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): Newcombe's hybrid score interval; nans when a group is empty."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    diff = p1 - p2
    lower = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, lower, upper


def welch_difference(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean1 - mean2, lower, upper): Welch's t interval (sample variances, ddof 1)."""
    if n1 < 2 or n2 < 2:
        return mean1 - mean2 if n1 and n2 else math.nan, math.nan, math.nan
    from scipy.stats import t

    a, b = var1 / n1, var2 / n2
    diff = mean1 - mean2
    se = math.sqrt(a + b)
    if se == 0:
        return diff, diff, diff
    dof = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    half = float(t.ppf(0.5 + confidence / 2, dof)) * se
    return diff, diff - half, diff + half


def mean_var(total: float, total_sq: float, n: int) -> tuple[float, float]:
    """Mean and sample variance (ddof 1) from a sum and a sum of squares."""
    if n == 0:
        return math.nan, math.nan
    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else math.nan
    return mean, var
