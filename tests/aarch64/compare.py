"""Compare two outputs of forecasts.py (x86-64 and arm64): every model refused or
answered alike, and every forecast within the tolerance. Prints the figures; exit 1
on a difference."""
from __future__ import annotations

import json
import sys

TOLERANCE = 1e-6  # relative to the forecast's magnitude (float32 has 24 bits: ~6e-8 per value)


def main(first: str, second: str) -> int:
    a, b = (json.load(open(path)) for path in (first, second))
    worst_abs = worst_rel = 0.0
    problems = []
    for name, answer in a["forecasts"].items():
        other = b["forecasts"].get(name)
        if other is None or set(answer) != set(other):
            problems.append(f"{name}: {answer.keys()} vs {other and other.keys()}")
            continue
        if "refused" in answer:
            if answer != other:
                problems.append(f"{name}: {answer} vs {other}")
            continue
        for key in ("batch", "single"):
            left, right = _flat(answer[key]), _flat(other[key])
            for x, y in zip(left, right):
                diff = abs(x - y)
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(abs(x), 1.0))
    print(json.dumps({"machines": [a["machine"], b["machine"]], "models": len(a["forecasts"]),
                      "max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "tolerance": TOLERANCE,
                      "problems": problems}))
    return 1 if problems or worst_rel > TOLERANCE else 0


def _flat(values: list) -> list[float]:
    return [v for row in values for v in (row if isinstance(row, list) else [row])]


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
