"""The notes of real-time evaluations: what the API lists and what `/metrics` shows."""

from __future__ import annotations

from milepost.audiences.engine import EvalResult
from milepost.audiences.evaluations import Evaluations
from milepost.priority import ThreadTimes


def _sample(text: str, name: str) -> float:
    (value,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return value


def test_a_step_is_noted_with_its_longest_waits_and_what_it_left() -> None:
    evaluations = Evaluations()
    step = EvalResult(adds=2, removes=1, users=3, seqs=(7, 9), at=10_000)
    step.received, step.due, step.due_total = [(9_000, 1), (9_400, 2)], [9_900], 4
    step.cause = "ingest"
    noted = evaluations.note(step, recorded_at=10_250)
    assert noted is not None and noted.cause == "ingest"
    assert (noted.first_seq, noted.last_seq, noted.batches, noted.timers) == (7, 9, 3, 1)
    assert (noted.oldest_batch_ms, noted.latest_timer_ms, noted.timers_left) == (1_250, 350, 3)
    assert evaluations.recent(10) == [noted]


def test_a_step_is_noted_with_the_evaluator_s_time_on_and_waiting_for_a_core() -> None:
    evaluations = Evaluations()
    timed = evaluations.note(EvalResult(at=1), recorded_at=900, spent=ThreadTimes(0.1234, 0.4567))
    assert timed is not None and (timed.cpu_ms, timed.waiting_ms) == (123, 457)
    unknown_wait = evaluations.note(EvalResult(at=2), recorded_at=900, spent=ThreadTimes(0.2, None))
    assert unknown_wait is not None and (unknown_wait.cpu_ms, unknown_wait.waiting_ms) == (200, None)
    untimed = evaluations.note(EvalResult(at=3), recorded_at=900)
    assert untimed is not None and (untimed.cpu_ms, untimed.waiting_ms) == (None, None)


def test_other_evaluations_are_not_noted_and_the_list_keeps_the_latest() -> None:
    evaluations = Evaluations(keep=2)
    assert evaluations.note(EvalResult(adds=5), recorded_at=1) is None  # evaluated nothing
    for at in (100, 200, 300):
        evaluations.note(EvalResult(at=at), recorded_at=at + 10)
    assert [e.at for e in evaluations.recent(10)] == [200, 300]
    assert [e.at for e in evaluations.recent(1)] == [300]


def test_the_timer_backlog_is_what_the_latest_real_time_step_left() -> None:
    evaluations = Evaluations()
    evaluations.note(EvalResult(at=1, due=[1, 1], due_total=5), recorded_at=2)
    assert "milepost_timer_backlog 3.0" in evaluations.metrics()
    calculation = evaluations.note(EvalResult(at=3, cause="calculation"), recorded_at=4)
    assert calculation is not None and calculation.timers_left is None
    assert "milepost_timer_backlog 3.0" in evaluations.metrics()  # not a real-time step: unchanged


def test_metrics_count_each_batch_and_timer_in_its_bucket() -> None:
    evaluations = Evaluations()
    # Batches that waited 0.1 s, 0.3 s (two of them), 0.5 s and 11 s.
    first = EvalResult(at=1_000, received=[(900, 1), (700, 2), (500, 1), (-10_000, 1)])
    evaluations.note(first, recorded_at=1_000)
    second = EvalResult(at=2_000, due=[1_950], due_total=1)  # late 0.05 s
    evaluations.note(second, recorded_at=2_000)
    text = evaluations.metrics()
    lag = "milepost_evaluation_lag_seconds"
    assert _sample(text, f'{lag}_bucket{{le="0.05"}}') == 0
    assert _sample(text, f'{lag}_bucket{{le="0.1"}}') == 1  # a bucket holds what is at most its bound
    assert _sample(text, f'{lag}_bucket{{le="0.3"}}') == 3
    assert _sample(text, f'{lag}_bucket{{le="0.5"}}') == 4
    assert _sample(text, f'{lag}_bucket{{le="10"}}') == 4
    assert _sample(text, f'{lag}_bucket{{le="+Inf"}}') == 5
    assert _sample(text, f"{lag}_count") == 5
    assert abs(_sample(text, f"{lag}_sum") - 12.2) < 1e-9
    assert _sample(text, 'milepost_timer_lateness_seconds_bucket{le="0.05"}') == 1
    assert _sample(text, "milepost_evaluations_total") == 2
    assert _sample(text, "milepost_timer_backlog") == 0
    assert _sample(text, "milepost_evaluation_lag_last_seconds") == 11
