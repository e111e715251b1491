"""The simulated teacher of the miniature world (`mathforge teacher-sim --world mini`).

A teacher that knows `mathforge.mini`'s world: from the prompt text alone it reads the last
problem of a prompt (few-shot examples come first), recognises each of our synthesis, judge and
check templates by its words, and answers in the world's formats: worked solutions ending in the
answer line, rephrasings, FOBAR and self-verification solved backwards, Evol and Xwin problems of a
chosen level, checks with a critique its own revision acts on, difficulty, correctness and
same-problem verdicts. A prompt it cannot read gets an off-format reply, as a weak teacher's.

Its mistakes are controlled: a solution is right with the probability of the problem's true level
(the lowest level whose knobs admit it, `mini.level_of`; any level hint is ignored); a wrong one
slips in one step and carries the slip on, or misreads an operand and solves that other problem
consistently; a share of the problems it writes are ill-posed (giving away more than one has) and a
share are planted copies of test problems; verdicts are right with a fixed probability. Every
choice is drawn from the request's hash, so a rerun matches. What is true (answer, level, whether
the solution is right, whether a problem is well posed) is returned beside the reply for the
simulator's log only, never inside a reply.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from mathforge import mini
from mathforge.answers import ANSWER_PREFIX
from mathforge.engine.cache import cache_key
from mathforge.engine.types import Sampling
from mathforge.synth.metamath import FOBAR_SUFFIX, SV_SUFFIX

LEVELS = (0.97, 0.93, 0.85, 0.70, 0.50)  # P(a solution is right) at true levels 1-5 (GPT-4 on MATH ~50%)

# The teacher's own story bank: it shares only part of the test sets' names, items and phrasings,
# so a copied test problem is a planted leak, not the teacher's habit.
NAMES = (*mini.NAMES[:12], "Ava", "Chen", "Dana", "Emil", "Farah", "Goran", "Jun", "Kira", "Lars", "Mina", "Otto")
ITEMS = (*mini.ITEMS[:8], "seeds", "bricks", "ribbons", "pebbles", "shells", "crayons", "magnets")
PHRASES = {
    "+": (mini.PHRASES["+"][0], "{name} receives {b} more.", "Later {name} collects {b} more."),
    "-": (mini.PHRASES["-"][0], "{name} hands {b} to a friend.", "{name} uses up {b}."),
    "*": (mini.PHRASES["*"][1], "Then {name} ends up with {b} times as many {item}."),
}
QUESTIONS = ("How many {item} does {name} have now?", "How many {item} does {name} have at the end?")
STATEMENTS = ("{name} has {a} {item} now.", "{name} now has {a} {item}.")
# The backward questions' own sentences (synth/metamath.py), read back as equations.
FOBAR = re.compile(re.escape(FOBAR_SUFFIX).replace(re.escape("{answer}"), r"(-?\d+)") + "$")
OFF_FORMAT = "Hmm, this one is tricky. Let me think about what is being asked here before I write anything."


@dataclass(frozen=True)
class MiniConfig:
    """The mini world's error rates (a `mathforge teacher-sim --world mini` flag each)."""

    levels: tuple[float, ...] = LEVELS
    verdict_right: float = 0.9  # P(a check, judge or difficulty verdict is right)
    ill_posed: float = 0.05  # share of written problems that give away more than there is
    leak: float = 0.01  # share of written problems that are copies of a test problem


def model_name(cfg: MiniConfig, seed: int = 0) -> str:
    """The model name the engine's cache sees: the settings' hash, so other settings never reuse answers."""
    blob = json.dumps({**asdict(cfg), "seed": seed}, sort_keys=True)
    return f"mini-sim@{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def request_key(body: dict[str, Any]) -> str:
    """The engine's cache key of a request body (sample 0, the only sample synthesis asks for), so
    the simulator's log joins what the run's cache and rows hold."""
    payload = {"messages": body["messages"]} if "messages" in body else {"prompt": body.get("prompt", "")}
    sampling = Sampling(temperature=body.get("temperature", 0.7), max_tokens=body.get("max_tokens", 512),
                        top_p=body.get("top_p", 1.0), seed=body.get("seed"), stop=tuple(body.get("stop") or ()))
    return cache_key("openai", str(body.get("model", "")), payload, sampling, 0)


# ---------------------------------------------------------------- the world's stories


@dataclass(frozen=True)
class Story:
    """A problem of the world: a start value, then operations; `x` marks the operand asked for."""

    name: str
    item: str
    start: int
    ops: tuple[tuple[str, int], ...] = ()
    x: int | None = None  # None: no unknown; -1: the start value; k: operand of operation k

    def values(self) -> list[int]:
        out = [self.start]
        for op, b in self.ops:
            out.append(mini._apply(op, out[-1], b))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    @property
    def well_posed(self) -> bool:
        return all(v >= 0 for v in self.values())

    def filled(self, value: int | None) -> Story:
        """The story with its unknown X replaced by `value` (itself when there is none)."""
        if self.x is None or value is None:
            return self
        if self.x == -1:
            return Story(self.name, self.item, value, self.ops)
        ops = list(self.ops)
        ops[self.x] = (ops[self.x][0], value)
        return Story(self.name, self.item, self.start, tuple(ops))

    @property
    def level(self) -> int:
        return mini.level_of(self.start, list(self.ops)) if self.well_posed else 5


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    text = re.escape(phrase).replace(r"\{name\}", r"(?P<name>[A-Z][a-z]+)").replace(r"\{b\}", r"(?P<b>\d+|X)")
    return re.compile("^" + text.replace(r"\{item\}", r"(?P<item>[a-z]+)").replace(r"\{a\}", r"(?P<a>-?\d+)") + "$")


@cache
def _op_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    banks = (mini.PHRASES, PHRASES)
    return tuple((op, _phrase_pattern(p)) for bank in banks for op, phrases in bank.items() for p in phrases)


_START = re.compile(r"^(?P<name>[A-Z][a-z]+) has (?P<b>\d+|X) (?P<item>[a-z]+)\.$")
_QUESTIONS = tuple(_phrase_pattern(q) for q in QUESTIONS)
_STATEMENTS = tuple(_phrase_pattern(s) for s in STATEMENTS)
_SENTENCE = re.compile(r"(?<=[.?])\s+")


def parse(text: str) -> tuple[Story, int | None] | None:
    """(story, given answer) of a problem of the world, or None: a plain question, a FOBAR question
    (the answer given, X asked) or a self-verification question (a statement of the answer, X asked)."""
    sentences = _SENTENCE.split(" ".join(text.split()))
    given, question = None, sentences[-1]
    if m := FOBAR.match(sentences[-1]):
        given, sentences = int(m.group(1)), sentences[:-1]
        question = sentences[-1] if sentences else ""
    elif sentences[-1] == SV_SUFFIX and len(sentences) > 2:
        stated = _match(_STATEMENTS, sentences[-2])
        if stated is None:
            return None
        given, question, sentences = int(stated["a"]), None, sentences[:-1]
        if _START.match(sentences[0]) and _START.match(sentences[0])["name"] != stated["name"]:
            return None
    story = _parse_story(sentences[:-1], question)
    if story is None or (given is None) != (story.x is None):
        return None
    return story, given


def _parse_story(context: list[str], question: str | None) -> Story | None:
    """The story of a problem's sentences before its question (None: the question was stated away)."""
    if not context or not (start := _START.match(context[0])):
        return None
    name, item = start["name"], start["item"]
    if question is not None:
        q = _match(_QUESTIONS, question)
        if q is None or q["name"] != name or q["item"] != item:
            return None
    ops, unknown = [], -1 if start["b"] == "X" else None
    for sentence in context[1:]:
        found = next(((op, m) for op, p in _op_patterns() if (m := p.match(sentence))), None)
        if found is None or found[1].groupdict().get("name", name) != name:
            return None
        op, m = found
        if m["b"] == "X":
            unknown = len(ops) if unknown is None else -2
        ops.append((op, 0 if m["b"] == "X" else int(m["b"])))
    if unknown == -2 or len(ops) > mini.REACH.steps:
        return None
    return Story(name, item, 0 if start["b"] == "X" else int(start["b"]), tuple(ops), unknown)


def _match(patterns: tuple[re.Pattern[str], ...], sentence: str) -> re.Match[str] | None:
    return next((m for p in patterns if (m := p.match(sentence))), None)


def render(story: Story, rng: random.Random, given: int | None = None) -> str:
    """A story in the teacher's words (phrasing drawn with `rng`); with an unknown X, as a FOBAR
    question whose answer is `given`."""
    parts = [f"{story.name} has {'X' if story.x == -1 else story.start} {story.item}."]
    for k, (op, b) in enumerate(story.ops):
        parts.append(rng.choice(PHRASES[op]).format(name=story.name, item=story.item, b="X" if story.x == k else b))
    parts.append(rng.choice(QUESTIONS).format(name=story.name, item=story.item))
    if story.x is not None:
        parts.append(FOBAR.pattern.replace(r"(-?\d+)", str(given)).replace("\\", "").rstrip("$"))
    return " ".join(parts)


# ---------------------------------------------------------------- solutions


def _line(x: int, op: str, b: int, y: int) -> str:
    return f"{x} {'×' if op == '*' else op} {b} = {y}."


def _worked(story: Story, slip: tuple[int, int] | None, rng: random.Random) -> tuple[str, int]:
    """A forward worked solution, an optional slip (step, delta) carried forward; (text, answer)."""
    x, lines = story.start, []
    for k, (op, b) in enumerate(story.ops):
        y = mini._apply(op, x, b) + (slip[1] if slip and slip[0] == k else 0)
        lines.append(_line(x, op, b, y))
        x = y
    if slip and not story.ops:
        x += slip[1]
    opener = rng.choice(("", "", f"Start with {story.start}. ", "First, "))
    body = opener + " ".join(lines) if lines else rng.choice(("", f"{story.name} has {x} {story.item}."))
    return f"{body}\n{ANSWER_PREFIX} {x}".lstrip("\n"), x


def _backward(story: Story, given: int, slip: tuple[int, int] | None) -> tuple[str, int] | None:
    """The unknown X solved from the answer given: forward to X's operation, back from the answer to
    just after it, then the one relation between them; None when the numbers admit no X."""
    k = story.x
    head = story.values()[: k + 1] if k is not None and k >= 0 else []
    lines, w = [f"Work backwards from {given}."], given
    inverse = {"+": "-", "-": "+", "*": "÷"}
    for j in range(len(story.ops) - 1, k, -1):
        op, b = story.ops[j]
        if op == "*" and w % b:
            return None
        v = w - b if op == "+" else w + b if op == "-" else w // b
        v += slip[1] if slip and slip[0] == j else 0
        lines.append(f"{w} {inverse[op]} {b} = {v}.")
        w = v
    if k == -1:
        x = w
        lines.append(f"So X = {x}.")
    else:
        op, v = story.ops[k][0], head[-1]
        if op == "*" and (v == 0 or w % v):
            return None
        x = w - v if op == "+" else v - w if op == "-" else w // v
        relation = {"+": f"X = {w} - {v}", "-": f"X = {v} - {w}", "*": f"X = {w} ÷ {v}"}[op]
        lines.append(f"{relation} = {x}.")
    if slip and slip[0] == len(story.ops):
        x += slip[1]
    return " ".join(lines) + f"\n{ANSWER_PREFIX} {x}", x


def _true_x(story: Story, given: int) -> int | None:
    found = _backward(story, given, None)
    return found[1] if found else None


def _slip(story: Story, rng: random.Random) -> tuple[int, int]:
    return rng.randrange(len(story.ops) + 1), rng.choice((-3, -2, -1, 1, 2, 3, 10))


def _misread(story: Story, rng: random.Random) -> Story:
    """The story with one number read wrong (a consistent solution of another problem)."""
    spots = [-1] + [k for k, (op, _) in enumerate(story.ops) if op != "*" and k != story.x]
    spot = rng.choice([s for s in spots if not (s == -1 and story.x == -1)] or [-1])
    delta = rng.choice((-2, -1, 1, 2, 5))
    if spot == -1:
        return Story(story.name, story.item, max(1, story.start + delta), story.ops, story.x)
    ops = list(story.ops)
    ops[spot] = (ops[spot][0], max(1, ops[spot][1] + delta))
    return Story(story.name, story.item, story.start, tuple(ops), story.x)


def solve(story: Story, given: int | None, right: bool, rng: random.Random) -> tuple[str, int] | None:
    """A worked solution (forward, or backward for an unknown X), right or wrong as decided."""
    truth = story.answer if given is None else _true_x(story, given)
    for _ in range(8):
        wrong = None if right else ("slip" if rng.random() < 0.5 else "misread")
        target = _misread(story, rng) if wrong == "misread" else story
        slip = _slip(story, rng) if wrong == "slip" else None
        made = _worked(target, slip, rng) if given is None else _backward(target, given, slip)
        if made and (right or made[1] != truth):
            return made
    return None


# ---------------------------------------------------------------- writing problems


def draw(level: int, rng: random.Random) -> Story:
    """A fresh well-posed story whose true level is `level`, in the teacher's bank (level 5 reaches
    past the ladder half the time: three or four operations, operands up to 99)."""
    reach = level == 5 and rng.random() < 0.5
    knobs = mini.REACH if reach else mini.LEVELS[level]
    while True:
        start = x = rng.randint(1, knobs.digits_max)
        ops = []
        for _ in range(rng.randint(3, 4) if reach else knobs.steps):
            op = rng.choice([o for o in knobs.ops if mini._operands(o, x, knobs)])
            b = rng.choice(mini._operands(op, x, knobs))
            ops.append((op, b))
            x = mini._apply(op, x, b)
        story = Story(rng.choice(NAMES), rng.choice(ITEMS), start, tuple(ops))
        if story.level == level:
            return story


def evolve(story: Story, strategy: str, rng: random.Random) -> Story:
    """Evol's five strategies on the world: `rewrite` keeps the level; `constraints` and `reasoning`
    add an operation, `deepen` a doubling or tripling, `concretize` larger operands."""
    if strategy == "rewrite":
        return draw(story.level, rng)
    if strategy == "concretize" or len(story.ops) >= mini.REACH.steps:
        bump = rng.randint(10, 40)
        ops = tuple((op, b + rng.randint(1, 9) if op == "+" else b) for op, b in story.ops)
        return Story(story.name, story.item, min(99, story.start + bump), ops)
    value = story.answer
    if strategy == "deepen":
        op, b = "*", rng.choice(mini.MULTIPLIERS)
    else:
        op = rng.choice("+-") if value > 1 else "+"
        b = rng.randint(1, min(value - 1, 20)) if op == "-" else rng.randint(2, 20)
    return Story(story.name, story.item, story.start, (*story.ops, (op, b)))


def ill_posed(story: Story, rng: random.Random) -> Story:
    """The story with one give-away of more than there is (appended when it had none)."""
    values = story.values()
    ops = list(story.ops)
    spots = [k for k, (op, _) in enumerate(ops) if op == "-"]
    k = rng.choice(spots) if spots else len(ops)
    b = values[k] + rng.randint(1, 9)
    ops[k:k + 1] = [("-", b)]
    return Story(story.name, story.item, story.start, tuple(ops[: mini.REACH.steps]))


@cache
def _test_texts() -> frozenset[str]:
    return frozenset(p for lv in mini.LEVELS for p, _, _ in mini.test_pool(lv))


def write(story: Story, cfg: MiniConfig, rng: random.Random, parent: str = "") -> tuple[str, dict[str, Any]]:
    """A written problem and its truth: planted leaks and ill-posed problems at the configured
    shares, otherwise never a test problem's text, and worded apart from `parent` (a teacher asked
    for a new problem does not hand back the old one's sentences)."""
    if rng.random() < cfg.leak:
        text = rng.choice(mini.test_pool(story.level)[:200])[0]
        return text, {"leak": True, **_truth(parse(text)[0])}
    if rng.random() < cfg.ill_posed:
        story = ill_posed(story, rng)
    text = render(story, rng)
    for tries in range(50):
        if text not in _test_texts() and (tries > 20 or difflib.SequenceMatcher(None, parent, text).ratio() < 0.85):
            break
        story = Story(rng.choice(NAMES[12:]), rng.choice(ITEMS[8:]) if tries > 5 else story.item, story.start, story.ops)
        text = render(story, rng)
    return text, {"leak": False, **_truth(story)}


def _truth(story: Story) -> dict[str, Any]:
    return {"answer": story.answer, "level": story.level, "well_posed": story.well_posed}


def rephrase(story: Story, rng: random.Random) -> Story:
    """The same quantities under another name or item (and the teacher's phrasing)."""
    name = rng.choice([n for n in NAMES if n != story.name])
    item = story.item if rng.random() < 0.5 else rng.choice([i for i in ITEMS if i != story.item])
    return Story(name, item, story.start, story.ops, story.x)


# ---------------------------------------------------------------- prompt kinds


# Each kind by its template's words (synth/prompts, quality/prompts); the first match wins.
KINDS = (
    ("check", "Check a math problem"),
    ("verifier", "You check worked solutions"),
    ("difficulty", "You are rating how hard"),
    ("same", "You compare two math problems"),
    ("paraphrase", "Rewrite the following math problem in your own words"),
    ("statement", "as one declarative sentence"),
    ("rephrase", "Restate a math problem"),
    ("evol", "harder and more varied"),
    ("xwin_generate", "as inspiration"),
    ("xwin_revise", "checked by a reviewer"),
    ("fobar", "replaced by the unknown X"),
    ("answer_aug", "Write your own complete chain-of-thought"),
    ("solve", "Work through the math problem"),
)
EVOL = {"Invent a different exercise": "rewrite", "adding one extra condition": "constraints",
        "more complex both in depth": "deepen", "more specific, concrete": "concretize",
        "more reasoning steps": "reasoning"}


def kind_of(text: str, last_turn: str) -> str:
    if "Now state only" in last_turn:
        return "elicit"
    return next((k for k, words in KINDS if words in text), "unknown")


def _between(text: str, start: str, end: str | None) -> str | None:
    """The text after the last `start` and before the next `end` (or to the end)."""
    idx = text.rfind(start)
    if idx < 0:
        return None
    rest = text[idx + len(start):]
    return (rest.split(end, 1)[0] if end else rest).strip()


_PROBLEM_SPANS = {
    "check": ("Problem: ", "\nCheck:"), "difficulty": ("Problem:\n", "\n\nFirst think"),
    "paraphrase": ("Problem: ", None), "rephrase": ("Problem: ", "\nRestated problem:"),
    "evol": ("Original exercise: ", "\nNew exercise:"), "xwin_generate": ("Inspiration: ", "\nNew problem:"),
    "xwin_revise": ("Problem: ", "\nCorrected problem:"), "fobar": ("Problem: ", "\nSolution:"),
    "answer_aug": ("Problem: ", "\nSolution:"), "solve": ("Problem: ", "\nSolution:"),
    "verifier": ("Problem: ", "\nSolution: "),
}


@dataclass
class Reply:
    text: str
    truth: dict[str, Any] = field(default_factory=dict)


def answer(text: str, last_turn: str, rng: random.Random, cfg: MiniConfig) -> tuple[str, str, dict[str, Any]]:
    """(kind, reply, truth) for one prompt; an unreadable prompt gets an off-format reply."""
    kind = kind_of(text, last_turn)
    handler = _HANDLERS.get(kind)
    reply = handler(text, rng, cfg) if handler else None
    if reply is None:
        return kind, OFF_FORMAT, {"parsed": False}
    return kind, reply.text, {"parsed": True, **reply.truth}


def _span(kind: str, text: str) -> str:
    return _between(text, *_PROBLEM_SPANS[kind]) or ""


def _problem(kind: str, text: str) -> tuple[Story, int | None] | None:
    span = _span(kind, text)
    return parse(span) if span else None


def _solve(kind: str):
    def handle(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
        found = _problem(kind, text)
        if found is None:
            return None
        story, given = found
        truth = story.answer if given is None else _true_x(story, given)
        full = story.filled(truth)
        right = full.well_posed and truth is not None and rng.random() < cfg.levels[full.level - 1]
        made = solve(story, given, right, rng)
        if made is None:
            return None
        return Reply(made[0], {"answer": truth, "level": full.level, "well_posed": full.well_posed,
                               "right": made[1] == truth and full.well_posed, "problem": _span(kind, text)})
    return handle


def _verdict(cfg: MiniConfig, rng: random.Random, true: bool) -> tuple[bool, bool]:
    """(verdict, whether it is right)."""
    right = rng.random() < cfg.verdict_right
    return (true if right else not true), right


def _check(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    found = _problem("check", text)
    if found is None:
        return None
    story = found[0]
    sound, right = _verdict(cfg, rng, story.well_posed)
    values = story.values()
    bad = next((k for k, (op, b) in enumerate(story.ops) if values[k + 1] < 0), None)
    if sound:
        critique = "Every quantity is stated and each step leaves a count that makes sense."
    elif bad is not None:
        critique = f"{story.name} gives away {story.ops[bad][1]} but has only {values[bad]} {story.item}, so the count would go below zero."
    else:
        critique = "The wording of the question is unclear."
    return Reply(f"{critique}\nVerdict: {'correct' if sound else 'incorrect'}",
                 {"well_posed": story.well_posed, "verdict": "sound" if sound else "flawed", "verdict_right": right})


_FLAW = re.compile(r"gives away (\d+) but has only (\d+)")


def _revise(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    """A revision acting on the review: the give-away it names made to fit; a vague review reworded."""
    found = _problem("xwin_revise", text)
    review = _between(text, "Review: ", "\nProblem:") or ""
    if found is None:
        return None
    story = found[0]
    flaw = _FLAW.search(review)
    if flaw:
        have, ops = int(flaw.group(2)), list(story.ops)
        k = next((k for k, (op, b) in enumerate(ops) if op == "-" and b == int(flaw.group(1))), None)
        if k is not None:
            ops[k] = ("-", rng.randint(1, have) if have else 0)
            ops = [o for o in ops if o[1]]
            story = Story(story.name, story.item, story.start, tuple(ops))
    else:
        story = rephrase(story, rng)
    problem = render(story, rng)
    return Reply(problem, {"leak": False, **_truth(story), "problem": problem})


def _write_from(kind: str):
    def handle(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
        found = _problem(kind, text)
        if found is None:
            return None
        story = found[0].filled(_true_x(*found) if found[1] is not None else None)  # an X problem: the one behind it
        if kind == "evol":
            strategy = next((s for words, s in EVOL.items() if words in text), "rewrite")
            story = evolve(story, strategy, rng)
        elif kind == "xwin_generate":
            story = draw(story.level, rng)
        problem, truth = write(story, cfg, rng, _span(kind, text))
        return Reply(problem, {**truth, "problem": problem})
    return handle


def _rephrase(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    found = _problem("rephrase", text)
    if found is None:
        return None
    story, given = rephrase(found[0], rng), found[1]
    truth = _truth(story) if given is None else {**_truth(story.filled(_true_x(story, given))), "answer": _true_x(story, given)}
    problem = render(story, rng, given)
    return Reply(problem, {"leak": False, **truth, "problem": problem})


def _paraphrase(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    found = _problem("paraphrase", text)
    if found is None or found[1] is not None:
        return None
    story = found[0]
    return Reply(render(Story(story.name, story.item, story.start, story.ops), rng), _truth(story))


_QA = re.compile(r"How many (?P<item>[a-z]+) does (?P<name>[A-Z][a-z]+) have (?:now|at the end)\?")


def _statement(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    question, given = _between(text, "Question: ", "\n"), _between(text, "Answer: ", "\n")
    m = _QA.fullmatch(question or "")
    if m is None or not re.fullmatch(r"-?\d+", given or ""):
        return None
    said = rng.choice(STATEMENTS).format(name=m["name"], item=m["item"], a=given)
    return Reply(f"Statement: {said}", {"answer": int(given)})


def _verifier(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    found = _problem("verifier", text)
    solution = _between(text, "\nSolution: ", "\nCheck the solution step by step")
    if found is None or solution is None:
        return None
    story, given = found
    truth = story.answer if given is None else _true_x(story, given)
    said = re.findall(rf"{ANSWER_PREFIX}\s*(-?\d+)", solution)
    results = [int(y) for y in re.findall(r"= (-?\d+)\.", solution)]
    steps_ok = given is not None or results == story.values()[1:]
    correct = story.well_posed and bool(said) and int(said[-1]) == truth and steps_ok
    verdict, right = _verdict(cfg, rng, correct)
    check = "Each step follows and the final answer matches." if verdict else "A step does not follow from the problem."
    return Reply(f"Check: {check}\nVerdict: {'correct' if verdict else 'incorrect'}",
                 {"correct": correct, "verdict_right": right, "answer": truth, "level": story.level})


def _difficulty(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    found = _problem("difficulty", text)
    if found is None:
        return None
    level = found[0].level
    right = rng.random() < cfg.verdict_right
    said = level if right else min(5, max(1, level + rng.choice((-1, 1))))
    steps = len(found[0].ops)
    return Reply(f"The problem takes {steps} operation{'s' * (steps != 1)} on one quantity.\nDifficulty: {said}",
                 {"level": level, "said": said, "verdict_right": said == level})


def _same(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    first, second = _between(text, "First problem: ", "\n\nSecond problem:"), _between(text, "Second problem: ", "\n\nSame problem?")
    a, b = parse(first or ""), parse(second or "")
    if a is None or b is None:
        return None
    same = (a[0].start, a[0].ops) == (b[0].start, b[0].ops)
    verdict, right = _verdict(cfg, rng, same)
    return Reply("yes" if verdict else "no", {"same": same, "verdict_right": right})


_LAST_VERDICT = re.compile(r"Verdict: (correct|incorrect)")


def _elicit(text: str, rng: random.Random, cfg: MiniConfig) -> Reply | None:
    """A follow-up asking for a missing last line: read off the previous reply (ours are always in
    format, so only an off-format reply gets here, and it stays unreadable)."""
    before = text.rsplit("Now state only", 1)[0]
    if "Verdict" in text.rsplit("Now state only", 1)[1]:
        found = _LAST_VERDICT.findall(before)
        return Reply(f"Verdict: {found[-1]}") if found else None
    found = re.findall(rf"{ANSWER_PREFIX} (-?\d+)", before.rsplit("Problem:", 1)[-1])
    return Reply(f"{ANSWER_PREFIX} {found[-1]}") if found else None


_HANDLERS = {
    "solve": _solve("solve"), "answer_aug": _solve("answer_aug"), "fobar": _solve("fobar"),
    "check": _check, "xwin_revise": _revise, "evol": _write_from("evol"), "xwin_generate": _write_from("xwin_generate"),
    "rephrase": _rephrase, "paraphrase": _paraphrase, "statement": _statement, "verifier": _verifier,
    "difficulty": _difficulty, "same": _same, "elicit": _elicit,
}
