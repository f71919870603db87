"""What every benchmark shares: where the binaries are, a figure and how it is printed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    goal: float
    # `value` must stay below `goal` (times, memory) or reach it (ratios).
    below: bool = True
    baseline: str = ""

    @property
    def met(self) -> bool:
        return self.value < self.goal if self.below else self.value >= self.goal

    def line(self) -> str:
        sign = "<" if self.below else ">="
        verdict = "met" if self.met else "NOT MET"
        base = f"  ({self.baseline})" if self.baseline else ""
        return (
            f"{self.name}: {self.value:.3f} {self.unit} (goal {sign} {self.goal}) {verdict}{base}"
        )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
