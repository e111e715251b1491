"""The SFT prompt: one format shared by training and evaluation (the paper's rule, §4.1.3).

The default is the MetaMath/Alpaca template the paper's SFT follows; every response ends with
the answer line of `mathforge.answers` ("\nThe answer is X"). `chat` uses the student's own chat
template instead.
"""

from __future__ import annotations

from typing import Any, Literal

from mathforge.answers import with_answer_line

PromptStyle = Literal["alpaca", "chat", "plain"]

ALPACA = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{problem}\n\n### Response: Let's think step by step."
)


def format_prompt(problem: str, style: PromptStyle = "alpaca", tokenizer: Any = None) -> str:
    """The text a student sees before its response, for training and evaluation alike."""
    if style == "alpaca":
        return ALPACA.format(problem=problem.strip())
    if style == "plain":
        return f"Question: {problem.strip()}\nAnswer: Let's think step by step."
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
        messages = [{"role": "user", "content": problem.strip()}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt style '{style}' (alpaca, chat, plain)")


def format_response(solution: str, answer: str) -> str:
    """A training target: the solution followed by the answer line the graders read."""
    return f" {with_answer_line(solution, answer)}"
