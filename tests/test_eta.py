"""The ETA of a frozen fine-tune (eta.py) on synthetic phase timings: no clock is read."""

import pytest

from mlcnn_core.eta import MeasuredRate, RemainingWork, epoch_ends_after


def test_epoch_ends_still_to_come():
    assert [epoch_ends_after(s, 6, 3) for s in range(7)] == [2, 2, 2, 1, 1, 1, 0]
    assert [epoch_ends_after(s, 5, 3) for s in range(6)] == [2, 2, 2, 1, 1, 0]


def test_a_rate_uses_its_guess_until_enough_units_are_measured():
    rate = MeasuredRate(guess=0.1, trust_after=3)
    rate.add(1, 0.5)
    rate.add(1, 0.5)
    assert rate.seconds_per_unit() == 0.1
    rate.add(1, 0.5)
    assert rate.seconds_per_unit() == pytest.approx(0.5)


def test_a_rate_follows_the_recent_part_of_its_phase():
    rate = MeasuredRate()
    for _ in range(40):
        rate.add(1, 1.0)        # the machine shared with another program
    for _ in range(40):
        rate.add(1, 0.25)       # the other program ended
    assert rate.seconds_per_unit() == pytest.approx(0.25)  # the whole phase's mean would say 0.625
    rate.add(8, 8 * 0.25)       # units measured in chunks count by their number
    assert rate.seconds_per_unit() == pytest.approx(0.25)


def test_the_parts_add_up():
    work = RemainingWork(images=4, reading=MeasuredRate(0.5), steps=10, stepping=MeasuredRate(0.1), epoch_ends=2,
                         ending=MeasuredRate(1.0), after_steps=3.0)
    assert work.seconds() == pytest.approx(2 + 1 + 2 + 3)


def simulated_run(read_s, step_s, end_s, after_s, chunk=8, steps_per_epoch=13, trial_step_s=None,
                  trial_end_s=None):
    """Drive :class:`RemainingWork` as ``train._train_frozen`` does through a run whose phases cost
    what the functions given say (of the unit's index); returns (ETA, time really left) at each event."""
    images, epochs = len(read_s), 4
    total_steps = epochs * steps_per_epoch
    left = RemainingWork(steps=total_steps, stepping=MeasuredRate(trust_after=5),
                         epoch_ends=epoch_ends_after(0, total_steps, steps_per_epoch))
    clock, etas = 0.0, []
    for first in range(0, images, chunk):
        spent = sum(read_s[first:first + chunk])
        clock += spent
        left.reading.add(min(chunk, images - first), spent)
        left.images = images - min(first + chunk, images)
        if first == 0:
            left.stepping.guess = step_s(0) if trial_step_s is None else trial_step_s
            left.ending.guess = end_s(0) if trial_end_s is None else trial_end_s
            left.after_steps = after_s
        etas.append((clock, left.seconds()))
    for step in range(1, total_steps + 1):
        clock += step_s(step)
        left.steps = total_steps - step
        epoch_end = step % steps_per_epoch == 0
        left.epoch_ends = epoch_ends_after(step, total_steps, steps_per_epoch) + int(epoch_end)
        etas.append((clock, left.seconds()))
        if step > 1:
            left.stepping.add(1, step_s(step))
        if epoch_end:
            clock += end_s(step)
            left.ending.add(1, end_s(step))
            left.epoch_ends -= 1
    clock += after_s
    return [(eta, clock - t) for t, eta in etas]


def test_steady_phases_give_the_time_left():
    for eta, really in simulated_run([0.5] * 97, lambda s: 0.01, lambda s: 0.03, after_s=0.3):
        assert eta == pytest.approx(really, rel=1e-6)


def test_after_the_reading_speeds_up_the_eta_comes_back_within_20_percent():
    # the reading runs 6× faster from image 64 on: another program on the machine ended
    runs = simulated_run([0.6] * 64 + [0.1] * 33, lambda s: 0.01, lambda s: 0.05, after_s=0.3)
    errors = [abs(eta - really) / really for eta, really in runs]
    chunk_ends = len(range(0, 97, 8))
    assert max(errors[11:chunk_ends]) < 0.2         # images 96 and 97


def test_after_the_steps_slow_down_the_eta_comes_back_within_20_percent():
    # the steps run 3× slower than their trial from step 20 on: another program started
    runs = simulated_run([0.1] * 16, lambda s: 0.01 if s < 20 else 0.03, lambda s: 0.05, after_s=0.3,
                         trial_step_s=0.01)
    errors = [abs(eta - really) / really for eta, really in runs]
    chunk_ends = len(range(0, 16, 8))
    assert max(errors[chunk_ends + 30:]) < 0.2      # from step 30 on


def test_the_work_after_the_steps_is_counted_at_every_event():
    runs = simulated_run([0.1] * 16, lambda s: 0.001, lambda s: 0.002, after_s=5.0)
    assert all(eta >= 5.0 and eta == pytest.approx(really, rel=1e-6) for eta, really in runs)
