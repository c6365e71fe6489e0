"""The restore benchmark's rounds per sample size (``--repeat``)."""

from bench.restore import median_ratio, rounds_per_size


def test_one_count_serves_every_size() -> None:
    assert rounds_per_size([100_000, 1_000_000], [3]) == [3, 3]


def test_a_count_per_size_is_taken_in_turn() -> None:
    assert rounds_per_size([100_000, 1_000_000], [5, 1]) == [5, 1]


def test_counts_that_do_not_match_the_sizes_are_refused() -> None:
    assert rounds_per_size([100_000, 1_000_000], [5, 1, 1]) is None
    assert rounds_per_size([100_000], [5, 1]) is None


def test_every_size_runs_at_least_once() -> None:
    assert rounds_per_size([10, 20], [0, -2]) == [1, 1]


def test_the_ratio_is_the_median_of_the_rounds_ratios() -> None:
    runs = [(12.0,), (10.0,), (30.0,)]
    bases = [(10.0,), (10.0,), (10.0,)]
    assert median_ratio(runs, bases) == 1.2
