"""Weighted sums of rewards and the spec grammar that names them.

A spec is a weighted sum of reward calls:

    spec      := sum
    sum       := product (('+' | '-') product)*     all rewards, or all numbers
    product   := factor (('*' | '/') factor)*      at most one factor may be a reward
    factor    := ('+' | '-') factor | NUMBER | call | '(' sum ')'
    call      := NAME ['(' [argument (',' argument)*] ')']
    argument  := sum                                a reward (positional, before keywords)
               | NAME '=' ['-'] NUMBER | NAME '=' STRING
    STRING    := '...' or "..."

Examples: `pscore + 0.5*format`, `business(pscore, alpha=0.5, f=0.3)`,
`0.3*oracle - 0.1*format`, `business(pscore + 0.2*oracle(field='like'), f=0.2)`.
The grammar is linear on purpose: a product of two rewards or a constant term is an error
(a constant shifts every reward equally, which group-relative advantages cancel anyway).
Errors say what is wrong and point at the position in the spec.

Letters used in shape comments: B batch, S slate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from rewards.protocol import Declared, RewardInput, RewardModel, RewardOutput, visible_to

Literal = float | int | str


NOT_NUMBERS = ("nan", "inf", "infinity")  # read as names, they would pass for rewards
MAX_DEPTH = 64  # nesting the parser follows (Python's recursion limit lies far beyond)

class SpecError(ValueError):
    """A malformed or unknown reward spec, with the position of the problem."""

    def __init__(self, message: str, spec: str, position: int) -> None:
        self.position = position
        # The first line stands alone (the command line prints only it); the caret below
        # points at the position for a reader of the full message.
        shown = spec if len(spec) <= 60 else spec[:57] + "..."
        super().__init__(f"{message} (at position {position} of {shown!r})\n  {spec}\n"
                         f"  {' ' * position}^")


@dataclass(frozen=True)
class Call:
    """A reward named in a spec: `name(args..., key=value...)`."""

    name: str
    args: tuple[Combination, ...]  # rewards passed positionally (e.g. business's inner reward)
    kwargs: tuple[tuple[str, Literal], ...]  # keyword literals, in spec order
    position: int  # where the name starts in the spec, for error messages

    @property
    def text(self) -> str:
        """Canonical spec text (positions and spacing dropped)."""
        parts = [arg.text for arg in self.args]
        parts += [
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={number_text(value)}"
            for key, value in self.kwargs
        ]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def __eq__(self, other: object) -> bool:  # the same reward wherever it is written
        return isinstance(other, Call) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)


@dataclass(frozen=True)
class Combination:
    """A weighted sum of calls; repeated calls are merged by adding their weights."""

    terms: tuple[tuple[float, Call], ...]

    @property
    def text(self) -> str:
        return format_terms([(weight, call.text) for weight, call in self.terms])

    def scaled(self, factor: float) -> Combination:
        return Combination(tuple((weight * factor, call) for weight, call in self.terms))

    def plus(self, other: Combination) -> Combination:
        weights: dict[Call, float] = {}
        for weight, call in (*self.terms, *other.terms):
            weights[call] = weights.get(call, 0.0) + weight
        return Combination(tuple((weight, call) for call, weight in weights.items()))


def number_text(value: float | int, integral: bool = False) -> str:
    """A number as the spec writes it, exactly: parsing the text gives the same value back
    (Python's shortest round-trip repr; "%g" rounded to 6 digits, and calls are merged by
    their text). An int stays an int; with `integral`, a whole float drops its ".0"."""
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text[:-2] if integral and text.endswith(".0") else text


def format_terms(terms: list[tuple[float, str]]) -> str:
    """`[(1, 'a'), (-0.5, 'b')]` -> 'a - 0.5*b'."""
    text = ""
    for index, (weight, name) in enumerate(terms):
        sign = "-" if weight < 0 else "+"
        magnitude = "" if abs(weight) == 1 else f"{number_text(abs(weight), integral=True)}*"
        if index == 0:
            text = f"{'-' if weight < 0 else ''}{magnitude}{name}"
        else:
            text += f" {sign} {magnitude}{name}"
    return text


_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<string>'[^']*'|\"[^\"]*\")|(?P<op>[-+*/(),=]))"
)


def _tokenize(spec: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) tokens, ending with ('end', '', len(spec))."""
    tokens, position = [], 0
    while position < len(spec):
        if spec[position:].strip() == "":
            break
        match = _TOKEN.match(spec, position)
        if match is None or match.lastgroup is None:
            start = len(spec) - len(spec[position:].lstrip())
            raise SpecError(f"unexpected character {spec[start]!r}", spec, start)
        tokens.append((match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
        position = match.end()
    tokens.append(("end", "", len(spec)))
    return tokens


class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.tokens = _tokenize(spec)
        self.index = 0
        self.depth = 0  # nested parentheses, signs and calls open at the current token

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, message: str, position: int | None = None) -> SpecError:
        return SpecError(message, self.spec, self.peek()[2] if position is None else position)

    def expect(self, text: str) -> None:
        kind, found, position = self.peek()
        if found != text:
            shown = "the end of the spec" if kind == "end" else repr(found)
            raise self.error(f"expected {text!r} but found {shown}", position)
        self.take()

    def finite(self, text: str, position: int) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise self.error(f"number {text} is too large", position)
        if value == 0 and any(digit in "123456789" for digit in text.lower().split("e")[0]):
            raise self.error(f"number {text} is too small (it would be read as 0)", position)
        return value

    def parse(self) -> Combination:
        if self.peek()[0] == "end":
            raise self.error("empty reward spec; name a reward, e.g. 'pscore + 0.5*format'")
        result = self.sum()
        kind, text, position = self.peek()
        if kind != "end":
            raise self.error(
                f"unexpected {text!r} after a complete expression; join terms with + or -", position
            )
        if not isinstance(result, Combination):
            raise self.error(f"the spec is the number {result:g}, not a reward", 0)
        return result

    def sum(self) -> float | Combination:
        """Terms joined by + and -: all numbers (a number) or all rewards (a Combination)."""
        terms: list[tuple[float, float | Combination, int]] = []
        sign = 1.0
        while True:
            position = self.peek()[2]
            terms.append((sign, self.product(), position))
            if not (self.peek()[0] == "op" and self.peek()[1] in ("+", "-")):
                break
            sign = -1.0 if self.take()[1] == "-" else 1.0
        if all(not isinstance(value, Combination) for _, value, _ in terms):
            return sum(sign * value for sign, value, _ in terms)
        total = Combination(())
        for sign, value, position in terms:
            if not isinstance(value, Combination):
                raise self.error(
                    f"constant term {value:g} is not a reward; write a weight times a reward "
                    "(e.g. 0.5*format)",
                    position,
                )
            total = total.plus(value.scaled(sign))
        return total

    def product(self) -> float | Combination:
        value = self.factor()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            operator, position = self.take()[1], self.peek()[2]
            right = self.factor()
            if operator == "/":
                if isinstance(right, Combination):
                    raise self.error("cannot divide by a reward; divide by a number", position)
                if right == 0:
                    raise self.error("division by zero", position)
                right = 1.0 / right
            if isinstance(value, Combination) and isinstance(right, Combination):
                raise self.error(
                    "cannot multiply two rewards; the spec is a weighted sum "
                    "(use business(...) to reweight items)",
                    position,
                )
            if isinstance(value, Combination):
                value = value.scaled(right)
            elif isinstance(right, Combination):
                value = right.scaled(value)
            else:
                value = value * right
        return value

    def factor(self) -> float | Combination:
        kind, text, position = self.peek()
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.error(f"the spec nests deeper than {MAX_DEPTH} levels (parentheses, "
                                 "signs, calls); write it flatter", position)
            return self._factor(kind, text, position)
        finally:
            self.depth -= 1

    def _factor(self, kind: str, text: str, position: int) -> float | Combination:
        if kind == "op" and text in ("+", "-"):  # unary sign
            self.take()
            value = self.factor()
            if text == "+":
                return value
            return value.scaled(-1.0) if isinstance(value, Combination) else -value
        if kind == "number":
            self.take()
            return self.finite(text, position)
        if kind == "name" and text.lower() in NOT_NUMBERS:
            raise self.error(f"{text} is not a weight the spec accepts; weights are finite "
                             "numbers (e.g. 0.5*format)", position)
        if kind == "name":
            return Combination(((1.0, self.call()),))
        if text == "(":
            self.take()
            inner = self.sum()
            self.expect(")")
            return inner
        shown = "the end of the spec" if kind == "end" else repr(text)
        raise self.error(f"expected a number, a reward name or '(' but found {shown}", position)

    def call(self) -> Call:
        _, name, position = self.take()
        args: list[Combination] = []
        kwargs: dict[str, Literal] = {}
        if self.peek()[1] == "(" and self.peek()[0] == "op":
            self.take()
            while self.peek()[1] != ")":
                kind, text, where = self.peek()
                if kind == "name" and self.tokens[self.index + 1][1] == "=":
                    self.index += 2
                    if text in kwargs:
                        raise self.error(f"keyword {text!r} given twice", where)
                    kwargs[text] = self.literal(text)
                elif kwargs:
                    raise self.error("a reward argument must come before keyword arguments", where)
                else:
                    argument = self.sum()
                    if not isinstance(argument, Combination):
                        raise self.error(
                            f"{name}() takes rewards positionally, got the number "
                            f"{argument:g}; name numbers as key=value",
                            where,
                        )
                    args.append(argument)
                if self.peek()[1] == ",":
                    self.take()
                elif self.peek()[1] != ")":
                    kind, found, where = self.peek()
                    shown = "the end of the spec" if kind == "end" else repr(found)
                    raise self.error(
                        f"expected ',' or ')' in the arguments of {name}() but found {shown}", where
                    )
            self.take()
        return Call(name, tuple(args), tuple(kwargs.items()), position)

    def literal(self, key: str) -> Literal:
        sign = 1
        if self.peek()[1] == "-":
            self.take()
            sign = -1
        kind, text, position = self.take()
        if kind == "number":
            if text.isdigit():  # an int, read exactly (a float would round past 2**53)
                return sign * int(text)
            return sign * self.finite(text, position)
        if kind == "string" and sign == 1:
            return text[1:-1]
        shown = "the end of the spec" if kind == "end" else repr(text)
        raise self.error(
            f"keyword {key!r} needs a number or a quoted string, found {shown}", position
        )


def parse_spec(spec: str) -> Combination:
    """Parse a reward spec into a weighted sum of calls (see the grammar above)."""
    if not isinstance(spec, str):
        raise ValueError(f"a reward spec must be a string, got {type(spec).__name__}")
    return _Parser(spec).parse()


class WeightedSum(Declared):
    """total = sum_i weight_i * reward_i.total; components = every term's, unweighted.

    It reads what any term reads and judges codes when any term does (that term's opinion
    on an illegal code is the sum's); each term sees the truth only if it declares it.
    """

    def __init__(self, terms: list[tuple[float, RewardModel]]) -> None:
        if not terms:
            raise ValueError("a weighted sum needs at least one reward")
        self.terms = terms
        self.name = format_terms([(weight, reward.name) for weight, reward in terms])
        self.requires = frozenset().union(*(reward.requires for _, reward in terms))
        self.judges_codes = any(getattr(reward, "judges_codes", False) for _, reward in terms)

    @property
    def parts(self) -> tuple[RewardModel, ...]:
        return tuple(reward for _, reward in self.terms)

    def __call__(self, batch: RewardInput) -> RewardOutput:
        total = torch.zeros(batch.batch_size, device=batch.items.device)
        components: dict[str, torch.Tensor] = {}
        for weight, reward in self.terms:
            output = reward(visible_to(reward, batch))
            total = total + weight * output.total
            components.update(output.components)
        return RewardOutput(total, components)


class WeightedItemSum(WeightedSum):
    """A weighted sum of item rewards is an item reward: item scores add with the weights."""

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        return sum(
            weight * reward.item_scores(visible_to(reward, batch)) for weight, reward in self.terms
        )  # (B, S)


def weighted_sum(terms: list[tuple[float, RewardModel]]) -> RewardModel:
    """The weighted sum of `terms`; the reward itself for a single term of weight 1."""
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    if all(hasattr(reward, "item_scores") for _, reward in terms):
        return WeightedItemSum(terms)
    return WeightedSum(terms)
