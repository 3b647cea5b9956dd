import numpy as np
import pytest

from xrdwidgets import ScanGeometry
from xrdwidgets.conversions import HC_KEV_ANGSTROM


def test_keyword_only_and_repr_round_trip():
    with pytest.raises(TypeError):
        ScanGeometry(50.0)  # positional arguments are refused
    g = ScanGeometry.create(wavelength_A=0.2, distance_mm=800, translation_step_mm=0.05,
                            centre_offset=1.5, angle_range_deg=(0, 360))
    assert g.energy_keV == pytest.approx(HC_KEV_ANGSTROM / 0.2)
    assert g.wavelength_A == pytest.approx(0.2)
    g2 = eval(repr(g), {"ScanGeometry": ScanGeometry})
    assert g2 == g
    assert g.full_rotation


def test_equality_within_tolerance_and_hash():
    a = ScanGeometry(energy_keV=50.0, distance_mm=1000.0)
    b = ScanGeometry(energy_keV=50.0 * (1 + 1e-12), distance_mm=1000.0)
    c = ScanGeometry(energy_keV=50.1, distance_mm=1000.0)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != ScanGeometry(energy_keV=50.0)  # a missing field is not equal to a known one


def test_attrs_round_trip_and_replace():
    g = ScanGeometry(energy_keV=60.0, translation_step_mm=0.02, angle_range_deg=(0, 180))
    attrs = g.to_attrs()
    assert attrs["geometry_energy_keV"] == 60.0
    assert "geometry_distance_mm" not in attrs
    assert ScanGeometry.from_attrs(attrs) == g
    assert ScanGeometry.from_attrs({"other": 1}) is None
    h = g.replace(distance_mm=500)
    assert h.distance_mm == 500 and g.distance_mm is None


def test_angles_and_translations():
    g = ScanGeometry(translation_step_mm=0.1)
    np.testing.assert_allclose(g.angles(4), [0, 45, 90, 135])
    t = g.translations(5)
    np.testing.assert_allclose(t, [-0.2, -0.1, 0, 0.1, 0.2])
    assert ScanGeometry().translations(4).tolist() == [-1.5, -0.5, 0.5, 1.5]


@pytest.mark.parametrize("kw,match", [
    ({"energy_keV": -5}, "energy_keV"),
    ({"distance_mm": 0}, "distance_mm"),
    ({"translation_step_mm": "abc"}, "translation_step_mm"),
    ({"angle_range_deg": (180, 0)}, "angle_range_deg"),
    ({"centre_offset": float("nan")}, "centre_offset"),
])
def test_bad_values_named(kw, match):
    with pytest.raises(ValueError, match=match):
        ScanGeometry(**kw)


def test_create_refuses_both():
    with pytest.raises(ValueError, match="not both"):
        ScanGeometry.create(energy_keV=10, wavelength_A=1)
