import pytest

from mathforge.answers import (
    answer_line,
    boxed_answer,
    boxed_spans,
    choice_letter,
    gsm8k_answer,
    last_boxed,
    option_text,
)

BOXED = [
    # (solution text, expected answer) — real MATH conventions and their edge cases
    (r"so the answer is $\boxed{2}$.", "2"),
    (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}.$", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"$x^2 + y^2 = \boxed 9$.", "9"),  # train/algebra/25040.json writes \boxed without braces
    (r"our answer is $\boxed 2$.", "2"),
    (r"\fbox{17}", "17"),
    (r"first $\boxed{5}$ ... - OR - ... again $\boxed{5}$", "5"),  # alternative solutions, same box
    (r"gives $\boxed{\frac{2\sqrt{53}+53}{53}}$. Thus, ... $a+b+c+d=\boxed{161}$.", "161"),  # intermediate box
    (r"The solutions are $\boxed{-2}$ and $\boxed{1}$.", "-2, 1"),  # multi-part kept whole
    (r"are $\boxed{(10, 0)}$ and $\boxed{(0,0)}$", "(10, 0), (0,0)"),
    (r"either $\boxed{15\frac{39}{40}}$ or $\boxed{\frac{639}{40}}$", r"\frac{639}{40}"),  # "or" = same value
    (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),
    (r"no box here", None),
    (r"there are $\boxed{}$ primes", None),  # train/number_theory/7115.json
    (r"$\boxed{unbalanced", None),
]


@pytest.mark.parametrize("solution,expected", BOXED)
def test_boxed_answer(solution, expected):
    assert boxed_answer(solution) == expected


def test_boxed_spans_nested_braces():
    assert last_boxed(r"\boxed{\frac{a}{b^{2}}} tail") == r"\frac{a}{b^{2}}"
    assert [s[2] for s in boxed_spans(r"\boxed{1} x \fbox{2}")] == ["1", "2"]


GSM = [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
    ("...\n#### 1,234,567", "1234567"),  # thousands separators removed, never truncated
    ("...\n#### -5", "-5"),
    ("...\n#### 3.5", "3.5"),
    ("#### $70,000", "70000"),
    ("no marker", None),
]


@pytest.mark.parametrize("text,expected", GSM)
def test_gsm8k_answer(text, expected):
    assert gsm8k_answer(text) == expected


@pytest.mark.parametrize(
    "label,expected",
    [("D", "D"), ("(d)", "D"), ("B.", "B"), ("A B D", "A, B, D"), ("AD", "A, D"), (["B", "C"], "B, C"),
     ("", None), (None, None), ("42", None)],
)
def test_choice_letter(label, expected):
    assert choice_letter(label) == expected


def test_option_text():
    assert option_text(["(A)2", "(B)4", "(C)9", "(D)10"], "D") == "10"
    assert option_text(["(A)2"], "E") is None


ANSWER_LINES = [
    ("step 1...\nThe answer is 18", "18"),
    ("The answer is: 18.", "18"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is 3\nThe answer is 4", "4"),  # the last one counts
    ("The answer is 5\nextra text on the next line", "5"),
    ("The correct answer is 19", None),  # the contract wants the exact prefix; graders may be lenient
    ("no answer line", None),
    ("The answer is ", None),
]


@pytest.mark.parametrize("text,expected", ANSWER_LINES)
def test_answer_line(text, expected):
    assert answer_line(text) == expected
