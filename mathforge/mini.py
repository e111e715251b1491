"""A miniature world where a tiny student measurably learns: procedural word problems with exact
worked solutions, difficulty levels 1-5 set by the generator's knobs, fixed held-out test sets.

A problem is a short story over a running quantity: a start value, then `steps` operations (get
more, give away, double/triple), each operand at most `digits_max`. The solution works the steps on
one line (level 1 has none: its answer is the quantity stated) and ends with the answer contract:

    Ana has 7 shells. Ana finds 5 more. Then Ana gives away 3. How many shells does Ana have now?
    7 + 5 = 12. 12 - 3 = 9.
    The answer is 9

Source specs (`mathforge.sources`): `mini:train?levels=1-5&size=4000&seed=0` (levels in
round-robin, so any prefix or random subset stays balanced) and `mini:test?levels=1-5&per_level=200`
(refused as seeds unless `allow_test=1`, like every test split). The test set of a level is the
first `per_level` problems of a fixed stream; training problems are drawn from a different stream and
every problem of the level's whole test pool is excluded by exact text, so train and test are
disjoint by construction (templates are shared by design, so number-masked matching does not apply).
Each level's problem space is counted exactly (`space_size`); asking for more than 1/20 of it as
training data is an error, so a scaling study never measures memorisation of an exhausted space.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from mathforge.io import DataError
from mathforge.record import Lineage, Record

NAMES = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena",
         "Milo", "Nora", "Omar", "Pia", "Quin", "Rosa", "Sami", "Tess", "Uma", "Vik", "Wren", "Yara")
ITEMS = ("apples", "shells", "coins", "stamps", "marbles", "books", "pens", "cards", "stickers",
         "beads", "shells", "rocks", "cookies", "tickets", "leaves", "buttons")
ITEMS = tuple(dict.fromkeys(ITEMS))
# Two phrasings per operation: the story varies while the arithmetic stays exact.
PHRASES = {
    "+": ("{name} finds {b} more.", "Then {name} gets {b} more."),
    "-": ("Then {name} gives away {b}.", "{name} loses {b}."),
    "*": ("Then the number of {item} is multiplied by {b}.", "{name} makes it {b} times as many."),
}
SPACE_RATIO = 20  # a level's problem space must be at least this many times its training size
TEST_POOL = 1_000  # test problems reserved per level (a test set is a prefix of this pool)
TEST_SEED = 20_240_708


@dataclass(frozen=True)
class Knobs:
    """The generator's difficulty knobs for one level."""

    steps: int  # operations after the start value (terms - 1)
    digits_max: int  # largest start value and +/- operand
    ops: str  # allowed operations among "+-*" (* multiplies by 2 or 3)


# A ladder a tiny student climbs as data grows (measured with one seed at 40/100/250/500 samples:
# level 1 goes from 11% to 96%, level 2 starts rising, levels 4-5 stay low): reading the quantity
# stated, one one-digit addition, one addition or subtraction up to 20, two of them, two with a
# doubling or tripling up to 50. Each level's curve rises over a different range of sizes, so the
# whole curve rises over two orders of magnitude instead of sitting at the floor until one level
# is learnt.
LEVELS = {
    1: Knobs(steps=0, digits_max=99, ops="+"),
    2: Knobs(steps=1, digits_max=9, ops="+"),
    3: Knobs(steps=1, digits_max=20, ops="+-"),
    4: Knobs(steps=2, digits_max=20, ops="+-"),
    5: Knobs(steps=2, digits_max=50, ops="+-*"),
}
MULTIPLIERS = (2, 3)
# Room above the ladder for the simulated teacher (mathforge.sim.miniteacher): chained Evol steps
# and level-5 rewrites reach up to four operations with operands up to 99, all counted as level 5.
# Nothing in this module draws from it, so the test and training sets are what they were.
REACH = Knobs(steps=4, digits_max=99, ops="+-*")


def level_of(start: int, ops: list[tuple[str, int]]) -> int:
    """The lowest level whose knobs admit a story (at most its number of operations, numbers within
    its bound, its operations only); 5 for a story beyond the ladder (see REACH)."""
    for level, knobs in LEVELS.items():
        if _admits(knobs, start, ops):
            return level
    return 5


def _admits(knobs: Knobs, start: int, ops: list[tuple[str, int]]) -> bool:
    if len(ops) > knobs.steps or not 1 <= start <= knobs.digits_max:
        return False
    return all(op in knobs.ops and (b in MULTIPLIERS if op == "*" else 1 <= b <= knobs.digits_max) for op, b in ops)


def _operands(op: str, x: int, knobs: Knobs) -> range | tuple[int, ...]:
    if op == "*":
        return MULTIPLIERS
    if op == "-":
        return range(1, min(knobs.digits_max, x) + 1)  # quantities never go negative
    return range(1, knobs.digits_max + 1)


@cache
def space_size(level: int) -> int:
    """How many distinct problems level `level` can generate (exact: a count over reachable values)."""
    knobs = LEVELS[level]
    ways = Counter({x: 1 for x in range(1, knobs.digits_max + 1)})
    for _ in range(knobs.steps):
        nxt: Counter[int] = Counter()
        for x, n in ways.items():
            for op in knobs.ops:
                for b in _operands(op, x, knobs):
                    nxt[_apply(op, x, b)] += n * len(PHRASES[op])
        ways = nxt
    return sum(ways.values()) * len(NAMES) * len(ITEMS)


def _apply(op: str, x: int, b: int) -> int:
    return x + b if op == "+" else x - b if op == "-" else x * b


@cache
def answer_odds(level: int) -> dict[int, float]:
    """The exact distribution of a level's answers under the story's plain draw (`_draw`).

    The plain draw piles answers up on a few values: sums of two small numbers peak in the middle,
    "gives away b" with b up to the quantity ends at 0 once in every x draws. A student that always
    says a level's most common answer would score that answer's share (11% on level 2, 9% on level
    3, all zeros) without reading a problem.
    """
    knobs = LEVELS[level]
    odds = {x: 1 / knobs.digits_max for x in range(1, knobs.digits_max + 1)}
    for _ in range(knobs.steps):
        nxt: Counter[int] = Counter()
        for x, p in odds.items():
            ops = [o for o in knobs.ops if _operands(o, x, knobs)]
            for op in ops:
                operands = _operands(op, x, knobs)
                for b in operands:
                    nxt[_apply(op, x, b)] += p / len(ops) / len(operands)
        odds = dict(nxt)
    return odds


def make_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """One (problem, solution, answer) of `level`, drawn with `rng`.

    Answers are flattened: a story whose answer is more common than a uniform share of the level's
    answers (1 / their number) is kept only with probability share / odds and drawn again
    otherwise. No answer then stands for more than a uniform share, so always answering a level's
    most common answer scores about 1 / (distinct answers): 1% on level 1, 7.6% on level 2, 3% and
    under above (3.0% over the five) instead of 6.7% over the five with the plain draw. Rare
    answers keep their odds; every problem the plain draw can produce is still produced.
    """
    odds = answer_odds(level)
    share = 1 / len(odds)
    while True:
        problem, solution, answer = _draw(level, rng)
        if rng.random() * odds[int(answer)] < share:
            return problem, solution, answer


def _draw(level: int, rng: random.Random) -> tuple[str, str, str]:
    knobs = LEVELS[level]
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(1, knobs.digits_max)
    story, work = [f"{name} has {x} {item}."], []
    for _ in range(knobs.steps):
        op = rng.choice([o for o in knobs.ops if _operands(o, x, knobs)])
        b = rng.choice(_operands(op, x, knobs))
        y = _apply(op, x, b)
        story.append(rng.choice(PHRASES[op]).format(name=name, item=item, b=b))
        work.append(f"{x} {'×' if op == '*' else op} {b} = {y}.")
        x = y
    story.append(f"How many {item} does {name} have now?")
    return " ".join(story), "\n".join([" ".join(work)] * bool(work) + [f"The answer is {x}"]), str(x)


def parse_levels(text: str | None) -> list[int]:
    """"1-5", "4,5", "3" -> level numbers; an unknown level is an error naming it."""
    levels: list[int] = []
    for part in (text or "1-5").split(","):
        lo, _, hi = part.strip().partition("-")
        levels += range(int(lo), int(hi or lo) + 1)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise DataError(f"mini: unknown level(s) {bad} (levels are {min(LEVELS)}-{max(LEVELS)})")
    return levels


@cache
def test_pool(level: int) -> tuple[tuple[str, str, str], ...]:
    """The level's reserved test problems, distinct, in a fixed order (~150 bytes a problem).

    Easy levels' problems can also come out of a harder level's knobs (small numbers), so a pool
    also excludes every lower level's pool: no text is in two pools under two levels.
    """
    rng, pool = random.Random(TEST_SEED + level), []
    seen = {p for lower in LEVELS if lower < level for p, _, _ in test_pool(lower)}
    while len(pool) < TEST_POOL:
        item = make_problem(level, rng)
        if item[0] not in seen:
            seen.add(item[0])
            pool.append(item)
    return tuple(pool)


def test_set(levels: list[int], per_level: int) -> Iterator[Record]:
    """The first `per_level` reserved test problems of each level."""
    if per_level > TEST_POOL:
        raise DataError(f"mini: per_level={per_level} exceeds the reserved test pool of {TEST_POOL}")
    for level in levels:
        for i, (problem, solution, answer) in enumerate(test_pool(level)[:per_level]):
            yield _record(f"mini/test/L{level}/{i}", problem, solution, answer, level, "test")


def train_set(levels: list[int], size: int, seed: int) -> Iterator[Record]:
    """`size` distinct training problems, levels in round-robin, none equal to any level's test problem.

    Holds the texts drawn so far in a set to keep them distinct (~150 bytes a problem; the largest
    allowed size is 1/20 of a level's space, a few hundred thousand at most).
    """
    per_level = {lv: size // len(levels) + (i < size % len(levels)) for i, lv in enumerate(levels)}
    for lv, n in per_level.items():
        if n * SPACE_RATIO > space_size(lv):
            raise DataError(f"mini: {n} training problems of level {lv} exceed 1/{SPACE_RATIO} of its "
                            f"problem space ({space_size(lv)}); use fewer or a harder level")
    rngs = {lv: random.Random(f"train/{seed}/{lv}") for lv in levels}
    seen = {p for lv in LEVELS for p, _, _ in test_pool(lv)}  # every level's: texts cross levels
    for i in range(size):
        lv = levels[i % len(levels)]
        while True:
            problem, solution, answer = make_problem(lv, rngs[lv])
            if problem not in seen:
                break
        seen.add(problem)
        yield _record(f"mini/train/{seed}/{i}", problem, solution, answer, lv, "train")


def _record(rid: str, problem: str, solution: str, answer: str, level: int, split: str) -> Record:
    return Record(id=rid, source="mini", problem=problem, solution=solution, answer=answer, level=level,
                  subject="arithmetic", split=split, lineage=Lineage(stage="seed"), meta={"mini": {"level": level}})


def _unlevelled(records: Iterator[Record], share: float) -> Iterator[Record]:
    """The records with a `share` of them (chosen by a hash of the id) stripped of their level, like
    GSM8K seeds beside MATH's: a difficulty judge, not metadata, has to find the hard ones."""
    for r in records:
        if int(hashlib.sha256(r.id.encode()).hexdigest()[:8], 16) / 16**8 < share:
            r.level, r.meta = None, {}
        yield r


def load_mini(spec) -> Iterator[Record]:
    """The `mini:` seed source: `mini:train?levels=1-5&size=N&seed=S[&unlevelled=0.3]` or
    `mini:test?levels=..&per_level=N` (`mathforge.sources` refuses the test split as seeds before it
    gets here); `unlevelled`: the share of training problems given no level."""
    levels = parse_levels(spec.opt("levels"))
    if spec.location == "test":
        return test_set(levels, int(spec.opt("per_level", "200")))
    if spec.location == "train":
        records = train_set(levels, int(spec.opt("size", "1000")), int(spec.opt("seed", "0")))
        return _unlevelled(records, float(spec.opt("unlevelled", "0")))
    raise DataError(f"mini:{spec.location}: unknown split (use mini:train or mini:test)")

