"""A sweep's search space: the distributions a user writes, checked before anything starts.

``uniform(0.9, 0.99)``, ``loguniform(1e-4, 1e-1)``, ``quniform(1, 10, 1)``, ``randint(1, 8)``,
``choice([16, 32, 64])``, as HyperDrive named them.  Each is stored as a small dict in the
sweep's spec and becomes an Optuna ``suggest_*`` call in the controller: Optuna samples.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class BadSpace(ValueError):
    """A search space refused before the sweep exists."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadSpace(f"{what} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Param:
    """One parameter's distribution (``kind`` is the function that made it)."""
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    values: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"kind": "choice", "values": list(self.values)}
        out = {"kind": self.kind, "low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Param":
        if d.get("kind") == "choice":
            return choice(d["values"])
        maker = KINDS.get(d.get("kind"))
        if maker is None:
            raise BadSpace(f"unknown distribution {d.get('kind')!r}: use one of "
                           f"{', '.join(sorted(KINDS))}")
        args = [d["low"], d["high"]] + ([d["step"]] if "step" in d else [])
        return maker(*args)

    def grid(self) -> list:
        """Every value, for the grid sampler; only discrete distributions have one."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind in ("randint", "quniform"):
            step = self.step or 1
            n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
            values = [self.low + i * step for i in range(n)]
            return [int(v) for v in values] if self.kind == "randint" else values
        raise BadSpace(f"{self} is continuous: the grid sampler needs choice(), randint() or "
                       "quniform() for every parameter (or use sampler='random' or 'tpe')")

    def suggest(self, trial, name: str):
        """The trial's value for this parameter, asked of Optuna."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "randint":
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "loguniform",
                                   step=self.step)

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"choice({list(self.values)!r})"
        extra = f", {self.step:g}" if self.step is not None else ""
        return f"{self.kind}({self.low:g}, {self.high:g}{extra})"


def _range(kind: str, low, high) -> tuple[float, float]:
    lo, hi = _number(low, f"{kind}'s low"), _number(high, f"{kind}'s high")
    if lo >= hi:
        raise BadSpace(f"{kind}({low!r}, {high!r}): low must be below high")
    return lo, hi


def uniform(low: float, high: float) -> Param:
    """Any value in [low, high], equally likely."""
    return Param("uniform", *_range("uniform", low, high))


def loguniform(low: float, high: float) -> Param:
    """A value in [low, high] whose logarithm is uniform (learning rates).  Takes the bounds
    themselves, not their logarithms (unlike HyperDrive's loguniform)."""
    lo, hi = _range("loguniform", low, high)
    if lo <= 0:
        raise BadSpace(f"loguniform({low!r}, {high!r}): both bounds must be above 0 "
                       "(these are the values, not their logarithms)")
    return Param("loguniform", lo, hi)


def quniform(low: float, high: float, step: float) -> Param:
    """low, low + step, ... up to high."""
    lo, hi = _range("quniform", low, high)
    q = _number(step, "quniform's step")
    if q <= 0 or q > hi - lo:
        raise BadSpace(f"quniform({low!r}, {high!r}, {step!r}): the step must be above 0 and "
                       "at most high - low")
    return Param("quniform", lo, hi, q)


def randint(low: int, high: int) -> Param:
    """An integer from low to high, both included."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        raise BadSpace(f"randint({low!r}, {high!r}) takes integers")
    lo, hi = _range("randint", low, high)
    return Param("randint", lo, hi)


def choice(values) -> Param:
    """One of the given values (numbers, strings, booleans or None)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise BadSpace(f"choice() takes a list of values, not {values!r}: choice([16, 32, 64])")
    values = tuple(values)
    if not values:
        raise BadSpace("choice([]) has nothing to choose from: give it at least one value")
    for v in values:
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise BadSpace(f"choice() values must be numbers, strings, booleans or None "
                           f"(they become command-line arguments), not {v!r}")
    if len(set(map(repr, values))) < len(values):
        raise BadSpace(f"choice({list(values)!r}) repeats a value")
    return Param("choice", values=values)


KINDS = {"uniform": uniform, "loguniform": loguniform, "quniform": quniform,
         "randint": randint}


def check_space(params: Any) -> dict[str, Param]:
    """The space as {name: Param}; refuses anything else with the name and the fix."""
    if not isinstance(params, dict) or not params:
        raise BadSpace(f"params= takes a dict of at least one name to a distribution, e.g. "
                       f"{{'lr': loguniform(1e-4, 1e-1)}}, not {params!r}")
    out = {}
    for name, dist in params.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise BadSpace(f"parameter name {name!r} must be an identifier (it becomes "
                           f"--{name} and, in %%sweep, a bound name)")
        if not isinstance(dist, Param):
            raise BadSpace(f"parameter {name!r}: {dist!r} is not a distribution; use "
                           "uniform(), loguniform(), quniform(), randint() or choice([...])")
        out[name] = dist
    return out


def space_to_dict(space: dict[str, Param]) -> dict[str, dict]:
    return {name: p.to_dict() for name, p in space.items()}


def space_from_dict(d: dict[str, dict]) -> dict[str, Param]:
    return {name: Param.from_dict(p) for name, p in d.items()}


def grid_size(space: dict[str, Param]) -> int:
    n = 1
    for p in space.values():
        n *= len(p.grid())
    return n


def parse_param(text: str) -> tuple[str, Param]:
    """``lr=loguniform(1e-4,1e-1)`` (a %%sweep --param) as (name, Param); no eval."""
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=\s*(\w+)\s*\((.*)\)\s*", text)
    if not m:
        raise BadSpace(f"--param {text!r}: write NAME=DIST(ARGS), e.g. "
                       "lr=loguniform(1e-4,1e-1) or bs=choice(16,32,64)")
    name, kind, body = m.groups()
    import ast
    try:
        args = ast.literal_eval(f"({body},)") if body.strip() else ()
    except (ValueError, SyntaxError):
        raise BadSpace(f"--param {text!r}: the arguments must be literals") from None
    if kind == "choice":
        values = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return name, choice(values)
    if kind not in KINDS:
        raise BadSpace(f"--param {text!r}: unknown distribution {kind!r}; use one of "
                       f"choice, {', '.join(sorted(KINDS))}")
    try:
        return name, KINDS[kind](*args)
    except TypeError as e:
        raise BadSpace(f"--param {text!r}: {e}") from None
