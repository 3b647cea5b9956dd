import numpy as np
import pytest

from xrdwidgets import conversions as c


def test_characteristic_lines_textbook_wavelengths():
    # Cu Kα1 8.04778 keV → 1.54060 Å; Mo Kα1 17.47934 keV → 0.70932 Å; 12.398 keV → 1.0000 Å
    assert c.wavelength_from_energy(8.04778) == pytest.approx(1.54060, abs=2e-5)
    assert c.wavelength_from_energy(17.47934) == pytest.approx(0.70932, abs=2e-5)
    assert c.energy_from_wavelength(1.0) == pytest.approx(12.3984, abs=1e-4)


def test_bragg_textbook_si_111_cu_ka():
    # Si(111) d = 3.1356 Å gives 2θ = 28.44° with Cu Kα1 (textbook value)
    assert c.d_to_tth(3.1356, 1.54056) == pytest.approx(28.443, abs=2e-3)
    assert c.tth_to_d(28.443, 1.54056) == pytest.approx(3.1356, abs=2e-4)


def test_q_d_tth_round_trips():
    tth = np.linspace(1, 150, 50)
    lam = 0.2
    q = c.tth_to_q(tth, lam)
    np.testing.assert_allclose(c.q_to_tth(q, lam), tth, rtol=1e-12)
    np.testing.assert_allclose(c.q_to_d(q), c.tth_to_d(tth, lam), rtol=1e-12)
    np.testing.assert_allclose(c.d_to_q(c.q_to_d(q)), q, rtol=1e-12)
    assert c.d_to_q(2 * np.pi) == pytest.approx(1.0)


def test_energy_dispersive():
    # d = 2 Å at a fixed 2θ = 5°: E = hc / (2 d sin 2.5°) = 71.06 keV
    e = c.d_to_energy(2.0, 5.0)
    assert e == pytest.approx(12.398419843 / (4 * np.sin(np.deg2rad(2.5))), rel=1e-9)
    assert e == pytest.approx(71.06, abs=0.01)
    assert c.energy_to_d(e, 5.0) == pytest.approx(2.0)
    assert c.q_to_energy(c.energy_to_q(60.0, 5.0), 5.0) == pytest.approx(60.0)


@pytest.mark.parametrize("bad", [0, -1, np.nan, np.inf])
def test_bad_wavelength(bad):
    with pytest.raises(ValueError, match="wavelength_A"):
        c.tth_to_q(10, bad)


def test_unreachable():
    with pytest.raises(ValueError, match="limit"):
        c.d_to_tth(0.1, 1.0)
    with pytest.raises(ValueError, match="limit"):
        c.q_to_tth(100.0, 1.0)
