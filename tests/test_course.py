"""The course's exercise checks: each with a right and a wrong answer (they compute, not look up)."""
import numpy as np
import pytest

from xrdwidgets import corrections, course
from xrdwidgets.ops import FILTERS


def test_check_result_is_shown_and_truthy():
    r = course.CheckResult("x", True, "fine <b>", {"a": 1})
    assert bool(r) and "Right" in r._repr_html_() and "&lt;b&gt;" in r._repr_html_()
    w = course.CheckResult("x", False, "no")
    assert not w and "Not yet" in w._repr_html_() and str(w).startswith("not yet")


def test_filter_choice_right_and_wrong():
    right = course.check_filter_choice("cosine")
    assert right.correct and right.details["psnr_db"] >= course.TARGET_PSNR_DB
    wrong = course.check_filter_choice("ramp")
    assert not wrong.correct and wrong.details["psnr_db"] < course.TARGET_PSNR_DB
    assert "noise" in wrong.message
    too_smooth = course.check_filter_choice("hann")
    assert not too_smooth.correct and "smooths too much" in too_smooth.message
    # the verdict is the measured PSNR, recomputed here from the exercise data
    sino, angles, truth = course.filter_exercise_data()
    assert sino.shape == (course.EXERCISE_N, course.EXERCISE_ANGLES) and truth.shape == (64, 64)
    assert right.details["psnr_db"] == pytest.approx(course.reconstruction_psnr(sino, angles, truth, filter="cosine"))
    with pytest.raises(ValueError, match="cosine"):
        course.check_filter_choice("gauss")
    assert set(FILTERS) >= {"cosine", "ramp", "hann"}


def test_centre_right_and_wrong():
    stack = course.centre_exercise_scan()
    assert stack.dims == ("translation", "angle", "tth")
    found = corrections.find_centre(stack).offset_steps        # what a student would do
    assert course.check_centre(found).correct
    wrong = course.check_centre(0.0)                            # the middle of the translations
    assert not wrong.correct and "too low" in wrong.message
    assert not course.check_centre(found + 1.0).correct
    with pytest.raises(ValueError, match="offset_steps"):
        course.check_centre("left")


def test_scan_dose_right_and_wrong():
    right = course.check_scan_dose(500)
    assert right.correct
    assert right.details["psnr_db"] >= 30 > right.details["psnr_half_db"]
    too_low = course.check_scan_dose(200)
    assert not too_low.correct and "raise the dose" in too_low.message
    wasteful = course.check_scan_dose(5000)
    assert not wasteful.correct and "less than half" in wasteful.message
    with pytest.raises(ValueError, match="dose"):
        course.check_scan_dose(-1)


def test_interlaced_sequence_right_and_wrong():
    assert course.interlaced_sequence(12, 3).tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    assert course.check_interlaced_sequence([0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]).correct
    wrong = course.check_interlaced_sequence(range(12))          # plain raster order
    assert not wrong.correct and wrong.details["first_wrong"] == 1
    assert not course.check_interlaced_sequence([0, 3, 6]).correct
    assert not course.check_interlaced_sequence(np.arange(8), n_angles=8, n_subsets=4).correct
    assert course.check_interlaced_sequence([0, 4, 1, 5, 2, 6, 3, 7], n_angles=8, n_subsets=4).correct
