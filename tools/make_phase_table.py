#!/usr/bin/env python
"""Generate ``xrdwidgets/sim/phases.json``: reference reflections of real crystal structures.

Run from the repository root (needs the optional dependency xrayutilities)::

    python tools/make_phase_table.py            # writes xrdwidgets/sim/phases.json
    python tools/make_phase_table.py --check    # regenerate in memory, compare with the shipped file

For every phase below, xrayutilities builds the crystal from its space group, lattice parameters
and Wyckoff sites, lists the allowed reflections with d ≥ ``D_MIN_A`` and evaluates the structure
factor.  The reflections are grouped into powder families (symmetry equivalents plus Friedel
mates, i.e. the Laue class) and written with

``hkl``
    representative Miller indices (the lexicographically largest member; hexagonal phases use
    three-index (h k l), not (h k i l)),
``d``
    spacing in Å,
``m``
    powder multiplicity (number of family members),
``f2``
    mean |F|² over the family at ``REFERENCE_ENERGY_KEV`` (electrons², per unit cell, including
    the Debye–Waller factor of the listed isotropic B values),
``F0`` and ``G``
    the decomposition F(E) = F0 + Σ_e (f'_e(E) + i f''_e(E)) · G_e of the structure factor of the
    representative reflection: F0 = Σ_j o_j f0_j(q) T_j exp(-i q·r_j) (the normal scattering,
    energy independent) and G_e the same sum with f0 replaced by 1 over the atoms of element e.
    The runtime package rebuilds |F(E)|² at any energy from it and the f', f'' table stored under
    ``anomalous`` (sampled from xrayutilities' database on a geometric energy grid), without
    needing xrayutilities.

Lattice parameters are room-temperature literature / ICDD PDF-card values (cited per phase).  The
B factors are rounded, approximate room-temperature isotropic values (Å²): they set the fall-off of
high-angle intensities, not the positions, and are not refined values for any particular sample.
Atoms are neutral (xrayutilities' f0 of the neutral atom).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("make_phase_table")

REFERENCE_ENERGY_KEV = 30.0
D_MIN_A = 0.5
#: geometric energy grid of the anomalous-scattering table (keV)
ANOMALOUS_E_MIN_KEV = 5.0
ANOMALOUS_E_MAX_KEV = 200.0
ANOMALOUS_N = 500
#: families whose |F|² is below this fraction of the strongest are dropped (accidental absences)
F2_RELATIVE_CUTOFF = 1e-8

OUT = Path(__file__).resolve().parents[1] / "xrdwidgets" / "sim" / "phases.json"

# name, aliases, formula, description, space group (number, symbol), xrayutilities lattice
# parameters (the free ones for the crystal system), sites (element, Wyckoff, free coords, B in Å²),
# source of the lattice parameters.
PHASES = [
    dict(name="Ni", aliases=["nickel"], formula="Ni", description="nickel, fcc (Cu type)",
         sg=(225, "Fm-3m"), params=[3.5238], sites=[("Ni", "4a", (), 0.37)],
         source="a = 3.5238 Å, ICDD PDF 04-0850 (Swanson & Tatge 1953)"),
    dict(name="Cu", aliases=["copper"], formula="Cu", description="copper, fcc",
         sg=(225, "Fm-3m"), params=[3.6150], sites=[("Cu", "4a", (), 0.55)],
         source="a = 3.6150 Å, ICDD PDF 04-0836 (Swanson & Tatge 1953)"),
    dict(name="Al", aliases=["aluminium", "aluminum"], formula="Al", description="aluminium, fcc",
         sg=(225, "Fm-3m"), params=[4.0494], sites=[("Al", "4a", (), 0.85)],
         source="a = 4.0494 Å, ICDD PDF 04-0787 (Swanson & Tatge 1953)"),
    dict(name="Fe", aliases=["alpha-Fe", "a-Fe", "ferrite", "iron"], formula="Fe",
         description="alpha-iron (ferrite), bcc", sg=(229, "Im-3m"), params=[2.8664],
         sites=[("Fe", "2a", (), 0.35)], source="a = 2.8664 Å, ICDD PDF 06-0696"),
    dict(name="Pt", aliases=["platinum"], formula="Pt", description="platinum, fcc",
         sg=(225, "Fm-3m"), params=[3.9231], sites=[("Pt", "4a", (), 0.32)],
         source="a = 3.9231 Å, ICDD PDF 04-0802 (Swanson & Tatge 1953)"),
    dict(name="Zn", aliases=["zinc"], formula="Zn", description="zinc, hcp (Mg type)",
         sg=(194, "P6_3/mmc"), params=[2.6649, 4.9468], sites=[("Zn", "2c", (), 1.1)],
         source="a = 2.6649 Å, c = 4.9468 Å, ICDD PDF 04-0831 (Swanson & Tatge 1953); "
                "B is an isotropic average of the strongly anisotropic Zn displacements"),
    dict(name="CeO2", aliases=["ceria", "cerianite"], formula="CeO2",
         description="ceria, fluorite (CaF2) type", sg=(225, "Fm-3m"), params=[5.4113],
         sites=[("Ce", "4a", (), 0.30), ("O", "8c", (), 0.55)],
         source="a = 5.4113 Å, ICDD PDF 34-0394"),
    dict(name="TiO2", aliases=["rutile", "TiO2-rutile"], formula="TiO2",
         description="titanium dioxide, rutile", sg=(136, "P4_2/mnm"), params=[4.5937, 2.9587],
         sites=[("Ti", "2a", (), 0.42), ("O", "4f", (0.30478,), 0.55)],
         source="a = 4.5937 Å, c = 2.9587 Å, x(O) = 0.30478, Burdett et al., "
                "J. Am. Chem. Soc. 109 (1987) 3639 (295 K); cf. ICDD PDF 21-1276"),
    dict(name="MgO", aliases=["periclase", "magnesia"], formula="MgO",
         description="magnesium oxide, rock salt (NaCl) type", sg=(225, "Fm-3m"),
         params=[4.2112], sites=[("Mg", "4a", (), 0.30), ("O", "4b", (), 0.34)],
         source="a = 4.2112 Å, ICDD PDF 45-0946"),
    dict(name="SiC", aliases=["3C-SiC", "beta-SiC", "b-SiC", "moissanite-3C"], formula="SiC",
         description="silicon carbide, 3C polytype (beta-SiC), zinc blende type",
         sg=(216, "F-43m"), params=[4.3596], sites=[("Si", "4a", (), 0.20), ("C", "4c", (), 0.22)],
         source="a = 4.3596 Å (3C-SiC, room temperature); cf. ICDD PDF 29-1129"),
    dict(name="Si", aliases=["silicon", "NIST-640"], formula="Si",
         description="silicon, diamond type (line-position standard, NIST SRM 640 series)",
         sg=(227, "Fd-3m"), params=[5.43102], sites=[("Si", "8a", (), 0.46)],
         source="a = 5.43102 Å (NIST SRM 640d certificate: 5.43123 Å at 22.5 °C; ICDD 27-1402: 5.4309 Å)"),
    dict(name="LaB6", aliases=["lanthanum hexaboride", "NIST-660"], formula="LaB6",
         description="lanthanum hexaboride, CaB6 type (calibrant, NIST SRM 660 series)",
         sg=(221, "Pm-3m"), params=[4.15689],
         sites=[("La", "1a", (), 0.25), ("B", "6f", (0.1996,), 0.35)],
         source="a = 4.15689 Å (NIST SRM 660c certificate, 22.5 °C); x(B) = 0.1996"),
]


def lattice_six(sg_number, params):
    """(a, b, c, alpha, beta, gamma) in Å and degrees from the free parameters of a crystal system."""
    if 195 <= sg_number <= 230:
        (a,) = params
        return (a, a, a, 90.0, 90.0, 90.0)
    if 75 <= sg_number <= 142:
        a, c = params
        return (a, a, c, 90.0, 90.0, 90.0)
    if 168 <= sg_number <= 194:
        a, c = params
        return (a, a, c, 90.0, 90.0, 120.0)
    raise NotImplementedError(f"crystal system of space group {sg_number} not handled")


def build_crystal(entry):
    """xrayutilities ``Crystal`` for one entry of :data:`PHASES` (or of the shipped table)."""
    import xrayutilities as xu

    el = xu.materials.elements
    atoms, pos, b = [], [], []
    for element, wyckoff, coords, biso in entry["sites"]:
        atoms.append(getattr(el, element))
        pos.append((wyckoff, *coords) if coords else wyckoff)
        b.append(biso)
    lat = xu.materials.SGLattice(entry["sg"][0], *entry["params"], atoms=atoms, pos=pos, b=b)
    return xu.materials.Crystal(entry["name"], lat)


def powder_families(lattice, hkls):
    """Group Miller indices into powder families (Laue class: point group plus Friedel mates)."""
    allowed = set(hkls)
    families = {}
    seen = set()
    for h in sorted(hkls):
        if h in seen:
            continue
        members = set(lattice.equivalent_hkls(h))
        members |= {tuple(-x for x in g) for g in members}
        members &= allowed
        seen |= members
        families[max(members, key=_representative_key)] = sorted(members)
    return families


def _representative_key(hkl):
    """Prefer indices without minus signs, then the lexicographically largest: (1,1,0) not (2,-1,0)."""
    return (sum(x >= 0 for x in hkl), hkl)


def structure_factor_parts(crystal, hkl):
    """(F0, {element: G_e}) of one reflection; see the module docstring."""
    q = np.asarray(crystal.Q(hkl), float)
    qn = float(np.linalg.norm(q))
    f0 = 0j
    g = {}
    for atom, p, occ, b in crystal.lattice.base():
        r = crystal.lattice.GetPoint(p)
        phase = occ * np.exp(-b * qn**2 / (4 * np.pi) ** 2) * np.exp(-1j * float(np.dot(q, r)))
        f0 += float(atom.f0(qn)) * phase
        g[atom.basename] = g.get(atom.basename, 0j) + phase
    return f0, g


def anomalous_table(elements):
    import xrayutilities as xu

    energies = np.geomspace(ANOMALOUS_E_MIN_KEV, ANOMALOUS_E_MAX_KEV, ANOMALOUS_N)
    table = {}
    for name in sorted(elements):
        atom = getattr(xu.materials.elements, name)
        table[name] = {
            "f1": [round(float(atom.f1(e * 1e3)), 4) for e in energies],
            "f2": [round(float(atom.f2(e * 1e3)), 4) for e in energies],
        }
    return [round(float(e), 6) for e in energies], table


def _complex_pair(z):
    """[re, im] rounded to 1e-8 (structure factors are O(1)–O(1000) electrons)."""
    return [round(float(z.real), 8) + 0.0, round(float(z.imag), 8) + 0.0]


def make_phase(entry):
    crystal = build_crystal(entry)
    lat = crystal.lattice
    hkls = [tuple(int(x) for x in h) for h in lat.get_allowed_hkl(2 * np.pi / D_MIN_A)]
    hkls = [h for h in hkls if h != (0, 0, 0)]
    families = powder_families(lat, hkls)
    energy_ev = REFERENCE_ENERGY_KEV * 1e3
    rows = []
    for rep, members in families.items():
        q = np.array([crystal.Q(h) for h in members], float)
        d = 2 * np.pi / np.linalg.norm(q, axis=1)
        if np.ptp(d) > 1e-9:
            raise RuntimeError(f"{entry['name']} {rep}: family members have different d {d}")
        f2 = float(np.mean(np.abs(crystal.StructureFactorForQ(q, energy_ev)) ** 2))
        f0, g = structure_factor_parts(crystal, rep)
        rows.append(dict(hkl=list(rep), d=float(d[0]), m=len(members), f2=f2, F0=f0, G=g))
    f2max = max(r["f2"] for r in rows)
    kept = [r for r in rows if r["f2"] >= F2_RELATIVE_CUTOFF * f2max]
    for r in rows:
        if r not in kept:
            log.info("%s: dropped %s (|F|² = %.3g, accidentally absent)", entry["name"], r["hkl"], r["f2"])
    kept.sort(key=lambda r: (-r["d"], [-x for x in r["hkl"]]))
    elements = sorted({s[0] for s in entry["sites"]})
    reflections = []
    for r in kept:
        reflections.append(
            {
                "hkl": r["hkl"],
                "d": round(r["d"], 9),
                "m": r["m"],
                "f2": float(f"{r['f2']:.9g}"),
                "F0": _complex_pair(r["F0"]),
                "G": {e: _complex_pair(r["G"][e]) for e in elements},
            }
        )
    log.info("%s: %d reflection families with d >= %.2f Å", entry["name"], len(reflections), D_MIN_A)
    return {
        "name": entry["name"],
        "aliases": entry["aliases"],
        "formula": entry["formula"],
        "description": entry["description"],
        "space_group": entry["sg"][1],
        "space_group_number": entry["sg"][0],
        "lattice": list(lattice_six(entry["sg"][0], entry["params"])),
        "lattice_params": entry["params"],
        "sites": [
            {"element": e, "wyckoff": w, "coords": list(c), "occupancy": 1.0, "b_iso": b}
            for e, w, c, b in entry["sites"]
        ],
        "elements": elements,
        "source": entry["source"],
        "reflections": reflections,
    }


def make_table():
    import xrayutilities as xu

    phases = [make_phase(entry) for entry in PHASES]
    elements = sorted({e for p in phases for e in p["elements"]})
    energies, anomalous = anomalous_table(elements)
    return {
        "format": "xrdwidgets-phases",
        "format_version": 1,
        "generated_by": "tools/make_phase_table.py",
        "xrayutilities_version": xu.__version__,
        "reference_energy_keV": REFERENCE_ENERGY_KEV,
        "d_min_A": D_MIN_A,
        "conventions": (
            "d in Å; f2 = mean |F|² over the powder family at reference_energy_keV, electrons² per "
            "unit cell incl. Debye-Waller factor exp(-B s²) per atom (s = sinθ/λ); "
            "F(E) = F0 + Σ_e (f1_e(E) + i f2_e(E)) G_e for the representative hkl, "
            "phase convention exp(-i q·r) as in xrayutilities; lattice (a, b, c, α, β, γ) in Å, deg"
        ),
        "anomalous": {"energy_keV": energies, "elements": anomalous},
        "phases": phases,
    }


def to_json(obj, indent=0, width=160):
    """JSON with one line per small object (a reflection, a site) and number lists inline."""
    flat = json.dumps(obj, ensure_ascii=False)
    scalar_list = isinstance(obj, list) and all(not isinstance(x, (list, dict)) for x in obj)
    if len(flat) + indent <= width or scalar_list or not isinstance(obj, (list, dict)):
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, list):
        items = [pad + to_json(x, indent + 1, width) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [pad + json.dumps(k) + ": " + to_json(v, indent + 1, width) for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output JSON (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = make_table()
    text = to_json(table) + "\n"
    if args.check:
        same = args.out.read_text(encoding="utf-8") == text
        log.info("%s is %s", args.out, "up to date" if same else "OUT OF DATE")
        return 0 if same else 1
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    log.info("wrote %s (%d phases, %.0f kB)", args.out, len(table["phases"]), len(text) / 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
