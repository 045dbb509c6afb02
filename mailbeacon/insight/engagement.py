"""Contact engagement score (DESIGN 11): opens, clicks and replies, decaying with age.

Each action adds a weight; everything decays with a half-life (default 30 days):

    score(now) = sum over actions of  weight(action) * 2 ** (-(now - time(action)) / half_life)

    weight(open)  = 1 / n    for the n-th open of one message (diminishing returns:
                             a message opened 5 times is not 5 times the interest)
    weight(click) = 3 / n    for the n-th click on one message
    weight(reply) = 10       a reply is the strongest sign of a person

A contact stores its score at one moment (`score`, `score_at`); adding an action first
decays the stored score to the action's time. Since every score decays at the same rate,
contacts sort by `rank = log2(score) + score_at / half_life`, which does not change as
time passes, so the database can sort and filter without recomputing anything.
"""

from __future__ import annotations

import math

DEFAULT_HALF_LIFE_DAYS = 30.0
WEIGHTS = {"open": 1.0, "click": 3.0, "reply": 10.0}
_DAY_US = 86_400 * 1_000_000
NO_RANK = -1e300  # the rank of a score of zero


def weight(action: str, nth: int) -> float:
    """The weight of the nth action of this kind on one message (nth counts from 1)."""
    base = WEIGHTS[action]
    return base if action == "reply" else base / max(1, nth)


def decayed(score: float, since_us: int, now_us: int,
            half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> float:
    """A score `since_us` old, seen at `now_us`."""
    if score <= 0:
        return 0.0
    age_days = max(0, now_us - since_us) / _DAY_US
    return score * 2 ** (-age_days / half_life_days)


def add(score: float, score_at: int, amount: float, at: int,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> tuple[float, int]:
    """The score after adding `amount` at time `at`: (score, its time)."""
    if at >= score_at:
        return decayed(score, score_at, at, half_life_days) + amount, at
    # An action older than the stored score (late hits): decay the action instead.
    return score + decayed(amount, at, score_at, half_life_days), score_at


def rank(score: float, score_at: int, half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> float:
    """A time-independent sort key: higher rank = higher score now."""
    if score <= 0:
        return NO_RANK
    return math.log2(score) + score_at / _DAY_US / half_life_days


def score_now(score: float, score_at: int, now_us: int,
              half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> float:
    return decayed(score, score_at, now_us, half_life_days)
