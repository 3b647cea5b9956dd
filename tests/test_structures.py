"""Phase table: lattice, allowed reflections, multiplicities, structure factors (vs xrayutilities)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from xrdwidgets.sim.structures import (
    Phase,
    Reflection,
    UnknownPhaseError,
    anomalous_scattering,
    d_spacing,
    get_phase,
    list_phases,
)

REQUIRED = ["Ni", "Cu", "Al", "Fe", "Pt", "Zn", "CeO2", "TiO2", "MgO", "SiC"]

# d-spacings in Å from the ICDD PDF cards / literature (card number in the comment).
LITERATURE_D = [
    ("Ni", (1, 1, 1), 2.034), ("Ni", (2, 0, 0), 1.762), ("Ni", (2, 2, 0), 1.246),  # 04-0850
    ("Cu", (1, 1, 1), 2.088), ("Cu", (2, 0, 0), 1.808), ("Cu", (2, 2, 0), 1.278),  # 04-0836
    ("Al", (1, 1, 1), 2.338), ("Al", (2, 0, 0), 2.024), ("Al", (2, 2, 0), 1.431),  # 04-0787
    ("Fe", (1, 1, 0), 2.027), ("Fe", (2, 0, 0), 1.433), ("Fe", (2, 1, 1), 1.170),  # 06-0696
    ("Pt", (1, 1, 1), 2.265), ("Pt", (2, 0, 0), 1.962), ("Pt", (2, 2, 0), 1.387),  # 04-0802
    ("Zn", (0, 0, 2), 2.473), ("Zn", (1, 0, 0), 2.308), ("Zn", (1, 0, 1), 2.091),  # 04-0831
    ("Zn", (1, 0, 2), 1.687), ("Zn", (1, 1, 0), 1.332),
    ("CeO2", (1, 1, 1), 3.124), ("CeO2", (2, 0, 0), 2.706), ("CeO2", (2, 2, 0), 1.913),  # 34-0394
    ("TiO2", (1, 1, 0), 3.247), ("TiO2", (1, 0, 1), 2.487), ("TiO2", (2, 1, 1), 1.687),  # 21-1276
    ("MgO", (2, 0, 0), 2.106), ("MgO", (2, 2, 0), 1.489), ("MgO", (1, 1, 1), 2.431),  # 45-0946
    ("SiC", (1, 1, 1), 2.517), ("SiC", (2, 2, 0), 1.541), ("SiC", (3, 1, 1), 1.314),  # 29-1129
    ("Si", (1, 1, 1), 3.1356), ("Si", (2, 2, 0), 1.9202),  # SRM 640
    ("LaB6", (1, 0, 0), 4.1569), ("LaB6", (1, 1, 0), 2.9394),  # SRM 660
]


def reflection(phase, hkl):
    for r in phase.reflections:
        if r.hkl == tuple(hkl):
            return r
    raise AssertionError(f"{phase.name}: no reflection {hkl}; has {[r.hkl for r in phase.reflections[:12]]}")


def test_required_phases_present():
    names = list_phases()
    for name in REQUIRED:
        assert name in names
    assert all(isinstance(get_phase(n), Phase) for n in names)


@pytest.mark.parametrize("name, hkl, d_lit", LITERATURE_D)
def test_literature_d_spacings(name, hkl, d_lit):
    r = reflection(get_phase(name), hkl)
    assert r.d == pytest.approx(d_lit, abs=2e-3)


@pytest.mark.parametrize("name", ["Ni", "Zn", "TiO2", "CeO2"])
def test_table_d_matches_lattice_metric(name):
    phase = get_phase(name)
    d = d_spacing(phase.lattice, phase.hkl)
    np.testing.assert_allclose(d, phase.d_spacings(), rtol=1e-8)
    assert np.all(np.diff(phase.d_spacings()) <= 0), "sorted by decreasing d"
    assert phase.d_spacings().min() >= phase.d_min - 1e-12


def cubic_family(hkl):
    """All signed permutations of hkl: the m-3m (Laue class of every cubic phase here) family."""
    return {tuple(s * x for s, x in zip(signs, p))
            for p in itertools.permutations(hkl) for signs in itertools.product((1, -1), repeat=3)}


@pytest.mark.parametrize(
    "name, a, rule",
    [
        ("Ni", 3.5238, lambda h, k, l: len({h % 2, k % 2, l % 2}) == 1),  # fcc: unmixed
        ("Fe", 2.8664, lambda h, k, l: (h + k + l) % 2 == 0),  # bcc
        ("MgO", 4.2112, lambda h, k, l: len({h % 2, k % 2, l % 2}) == 1),
        # diamond: fcc and not (all even with h+k+l = 4n+2)
        ("Si", 5.43102, lambda h, k, l: len({h % 2, k % 2, l % 2}) == 1 and (h % 2 == 1 or (h + k + l) % 4 == 0)),
    ],
)
def test_cubic_reflections_complete_with_multiplicities(name, a, rule):
    """Independent enumeration: allowed families down to d_min, and multiplicities."""
    phase = get_phase(name)
    n = int(a / phase.d_min) + 1
    expected = {}
    for h, k, l in itertools.product(range(-n, n + 1), repeat=3):
        if (h, k, l) != (0, 0, 0) and a / np.sqrt(h * h + k * k + l * l) >= phase.d_min and rule(h, k, l):
            key = tuple(sorted((abs(h), abs(k), abs(l)), reverse=True))
            expected[key] = expected.get(key, 0) + 1
    found = {tuple(sorted(map(abs, r.hkl), reverse=True)): r.multiplicity for r in phase.reflections}
    assert found == expected
    for r in phase.reflections:
        assert r.multiplicity == len(cubic_family(r.hkl))


@pytest.mark.parametrize(
    "name, hkl, m",
    [("Zn", (1, 0, 1), 12), ("Zn", (0, 0, 2), 2), ("Zn", (1, 0, 0), 6), ("Zn", (1, 1, 0), 6),
     ("TiO2", (1, 1, 0), 4), ("TiO2", (1, 0, 1), 8), ("TiO2", (2, 1, 1), 16), ("TiO2", (2, 1, 0), 8),
     ("SiC", (1, 1, 1), 8), ("CeO2", (3, 1, 1), 24)],
)
def test_multiplicities(name, hkl, m):
    assert reflection(get_phase(name), hkl).multiplicity == m


@pytest.mark.parametrize(
    "name, absent",
    [
        ("Zn", [(0, 0, 1), (0, 0, 3), (1, 1, 1)]),  # P6_3/mmc: 00l and hh-2h l need l even
        ("TiO2", [(1, 0, 0), (0, 0, 1), (0, 1, 0)]),  # P4_2/mnm: 0kl needs k+l even
        ("Fe", [(1, 0, 0), (1, 1, 1)]),
        ("CeO2", [(1, 1, 0), (2, 1, 0)]),
        ("Si", [(2, 0, 0), (2, 2, 2)]),  # diamond glide
    ],
)
def test_systematic_absences(name, absent):
    present = {r.hkl for r in get_phase(name).reflections}
    assert not present & set(absent)


def test_fluorite_and_rock_salt_structure_factor_relations():
    # CeO2: F(200) = 4(f_Ce − 2 f_O) < F(220) = 4(f_Ce + 2 f_O); MgO: F(111) = 4(f_Mg − f_O) weak.
    ce = get_phase("CeO2")
    assert reflection(ce, (2, 0, 0)).f2 < reflection(ce, (2, 2, 0)).f2
    mg = get_phase("MgO")
    assert reflection(mg, (1, 1, 1)).f2 < 0.1 * reflection(mg, (2, 0, 0)).f2


def test_get_phase_names_aliases_and_passthrough():
    assert get_phase("ni") is get_phase("NI") is get_phase(" Ni ")
    assert get_phase("rutile").name == "TiO2"
    assert get_phase("3C-SiC").name == get_phase("beta-sic").name == "SiC"
    assert get_phase("alpha-Fe").name == "Fe"
    assert get_phase("ceria").name == "CeO2"
    ni = get_phase("Ni")
    assert get_phase(ni) is ni
    assert "3C" in get_phase("SiC").description and get_phase("SiC").space_group == "F-43m"


def test_unknown_phase_lists_known_names():
    with pytest.raises(KeyError) as err:
        get_phase("unobtainium")
    msg = str(err.value)
    assert "unobtainium" in msg and all(n in msg for n in REQUIRED)
    with pytest.raises(ValueError):
        get_phase("anatase")
    assert issubclass(UnknownPhaseError, ValueError)
    with pytest.raises(TypeError, match="Phase"):
        get_phase(3)


def test_d_spacings_strain_and_shape():
    phase = get_phase("Cu")
    d0 = phase.d_spacings()
    np.testing.assert_allclose(phase.d_spacings(2e-3), d0 * 1.002)
    assert phase.d_spacings(np.zeros((4, 2))).shape == (4, 2, len(phase.reflections))
    with pytest.raises(ValueError, match="strain"):
        phase.d_spacings(-1.0)
    with pytest.raises(ValueError, match="strain"):
        phase.d_spacings(np.nan)


def test_d_spacing_checks_input():
    assert d_spacing((4.0, 4.0, 4.0, 90, 90, 90), (2, 0, 0)) == pytest.approx(2.0)
    hexa = (2.0, 2.0, 3.0, 90, 90, 120)
    assert d_spacing(hexa, (1, 0, 0)) == pytest.approx(2.0 * np.sqrt(3) / 2)
    with pytest.raises(ValueError, match="lattice"):
        d_spacing((4.0, 4.0, 4.0), (1, 1, 1))
    with pytest.raises(ValueError, match="0, 0, 0"):
        d_spacing((4.0, 4.0, 4.0, 90, 90, 90), (0, 0, 0))


def test_structure_factors_energy_dependence():
    pt = get_phase("Pt")
    ref = pt.structure_factors()
    np.testing.assert_array_equal(ref, [r.f2 for r in pt.reflections])
    np.testing.assert_allclose(pt.structure_factors(pt.reference_energy_keV), ref, rtol=2e-4)
    # f' of Pt dips at its K edge (78.4 keV): weaker lines just above the edge than at 60 keV
    assert np.all(pt.structure_factors(78.6) < pt.structure_factors(60.0))
    f = anomalous_scattering("Pt", 78.6)
    assert f.real < -4 and f.imag > 2


def test_user_phase_without_decomposition_uses_f2():
    phase = Phase("X", "X", "Pm-3m", (3.0, 3.0, 3.0, 90.0, 90.0, 90.0), (Reflection((1, 0, 0), 3.0, 6, 10.0),))
    assert phase.structure_factors(50.0) == pytest.approx([10.0])
    assert "X" in repr(phase) and "1 reflections" in repr(phase)


def test_anomalous_scattering_checks_input():
    with pytest.raises(ValueError, match="energy_keV"):
        anomalous_scattering("Ni", 30000.0)  # eV passed as keV
    with pytest.raises(ValueError, match="element"):
        anomalous_scattering("Xx", 30.0)


# ----------------------------------------------------------------------------- xrayutilities


def xu_crystal(phase):
    """xrayutilities crystal rebuilt from the structure model stored with the phase."""
    xu = pytest.importorskip("xrayutilities")
    a, _, c = phase.lattice[:3]
    params = (a,) if phase.space_group_number >= 195 else (a, c)
    el = xu.materials.elements
    lat = xu.materials.SGLattice(
        phase.space_group_number, *params,
        atoms=[getattr(el, s.element) for s in phase.sites],
        pos=[(s.wyckoff, *s.coords) if s.coords else s.wyckoff for s in phase.sites],
        occ=[s.occupancy for s in phase.sites],
        b=[s.b_iso for s in phase.sites],
    )
    return xu.materials.Crystal(phase.name, lat)


def merged_by_d(d, values, digits=6):
    """Sum of values per distinct d (rounded), as a dict d → sum."""
    out = {}
    for di, v in zip(np.round(d, digits), values):
        out[di] = out.get(di, 0.0) + v
    return out


@pytest.mark.parametrize("name", list_phases())
def test_table_matches_xrayutilities(name):
    """Every allowed reflection, its d (1e-6 Å) and Σ|F|² per d at three energies (0.5 %)."""
    phase = get_phase(name)
    crystal = xu_crystal(phase)
    hkl = [h for h in crystal.lattice.get_allowed_hkl(2 * np.pi / phase.d_min) if any(h)]
    q = np.array([crystal.Q(h) for h in hkl], dtype=float)
    d_xu = 2 * np.pi / np.linalg.norm(q, axis=1)
    keep = d_xu >= phase.d_min - 1e-9
    q, d_xu = q[keep], d_xu[keep]

    counts_xu = merged_by_d(d_xu, np.ones(len(d_xu)))
    counts = merged_by_d(phase.d_spacings(), phase.multiplicities)
    assert counts.keys() == counts_xu.keys()
    assert counts == counts_xu
    for d in phase.d_spacings():  # d to 1e-6 Å
        assert np.min(np.abs(d_xu - d)) < 1e-6

    for energy in (phase.reference_energy_keV, 47.3, 87.3):
        f2_xu = np.abs(crystal.StructureFactorForQ(q, energy * 1e3)) ** 2
        xu_sum = merged_by_d(d_xu, f2_xu)
        exact = energy == phase.reference_energy_keV  # the stored f2, else rebuilt from F0, G, f', f''
        f2 = phase.structure_factors(None if exact else energy)
        ours = merged_by_d(phase.d_spacings(), phase.multiplicities * f2)
        tol = 1e-6 if exact else 2e-3
        for d, value in xu_sum.items():
            assert ours[d] == pytest.approx(value, rel=tol, abs=1e-6 * max(xu_sum.values())), (energy, d)
    np.testing.assert_allclose(
        [sum(r.f2 * r.multiplicity for r in phase.reflections)],
        [sum(np.abs(crystal.StructureFactorForQ(q, phase.reference_energy_keV * 1e3)) ** 2)],
        rtol=1e-6,
    )
