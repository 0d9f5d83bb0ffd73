"""mrtutor.source: the listings the chapters print keep the idea and drop the argument checks."""

import ast

from mrtutor import source
from mrtutor.sense import Sense


def check_positive(value):
    if value <= 0:
        raise ValueError("must be positive")


def scaled_sum(values, scale):
    """Sum of ``values`` times ``scale``.

    Args:
        values: numbers.
        scale: a positive factor.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    check_positive(len(values))
    if not values:
        return 0.0  # an empty sum; this branch returns, so it is kept
    total = 0.0
    for value in values:
        total += value
    return scale * total


def test_checks_and_the_docstring_tail_leave_the_idea_stays():
    text = source.trimmed(scaled_sum)
    assert "raise" not in text and "check_positive" not in text and "Args:" not in text
    assert '"""Sum of ``values`` times ``scale``.' in text
    assert "return 0.0" in text and "total += value" in text and "return scale * total" in text
    assert text.count("# (argument checks left out)") == 1  # two consecutive checks, one mark
    ast.parse(text)  # still valid Python


def test_the_last_line_names_the_full_source():
    text = source.trimmed(scaled_sum)
    last = text.splitlines()[-1]
    assert last.startswith("# full source: tests/test_source.py, lines ")
    start, end = map(int, last.rsplit(" ", 1)[-1].split("-"))
    assert end - start + 1 == len(source.inspect.getsource(scaled_sum).splitlines())


def test_a_package_method_keeps_its_code_without_its_validation():
    text = source.trimmed(Sense.__init__)
    assert "raise" not in text
    assert "self.maps = maps" in text and "centring_phases" in text
    assert "# full source: mrtutor/sense.py" in text
