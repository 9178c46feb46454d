"""One table of output roles (``DCTNetLib.output_roles``): ``dctnet reconstruct``, ``dctnet demo`` and the Slicer
glue read their roles and file names off it, and list them nowhere else.

The static checks read the code with ``ast``: a collection that names two roles or more, or a string holding one of
the table's file names, outside the table fails; so does a role looked up by name that the table does not have.
The files written are checked on real runs of ``dctnet demo`` and ``dctnet reconstruct --ct --extras`` with the
tiny model.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from DCTNetLib import cli
from DCTNetLib.commands import demo, reconstruct
from DCTNetLib.output_roles import (BONE_SUPPRESSED, CT, DICOM, DICOM_FOLDER, EXTRAS, FIGURE, FROM_CT, IMAGE_KINDS,
                                    IMAGES_ONLY, MAP, OUTPUT, OUTPUT_ROLES, RADIOGRAPH, REPORT, ROLES, VOLUME_KINDS)

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "DCTNetReconstruction"
TABLE = SOURCE / "DCTNetLib" / "output_roles.py"
# The code that writes, names or shows the outputs.
USERS = (SOURCE / "DCTNetLib" / "commands" / "demo.py", SOURCE / "DCTNetLib" / "commands" / "reconstruct.py",
         SOURCE / "DCTNetReconstruction.py",
         *sorted((SOURCE / "DCTNetSlicerLib").glob("*.py")))
# Roles that are also the names of inputs (--ct, --pa, --lat, --reference, --dicom): code names those inputs by
# them too, so a collection of these alone is not a list of outputs.
INPUT_NAMES = {"ct", "pa", "lat", "reference", "dicom"}
# Nodes the Slicer glue makes itself (no command writes them): the reconstruction minus the reference CT.
SLICER_MADE = {"difference"}
# Variables that hold outputs by role.
BY_ROLE = re.compile(r"^(paths|outputs|volumes|images|made|existing|written)$")


def _string(node: ast.AST) -> list[str]:
    """``[the string]`` when ``node`` is a string constant, else ``[]``."""
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def _collections(tree: ast.AST):
    """``(line, the strings it holds)`` of every dict, set, list and tuple display, and of every ``dict(...)`` and
    ``.update(...)`` call (their keywords)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            yield node.lineno, [s for key in node.keys if key is not None for s in _string(key)]
        elif isinstance(node, (ast.Set, ast.List, ast.Tuple)):
            yield node.lineno, [s for element in node.elts for s in _string(element)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("dict",
                                                                                                          "update"):
            yield node.lineno, [k.arg for k in node.keywords if k.arg]


def _role_lookups(tree: ast.AST):
    """``(line, name)`` of every role looked up by name: ``paths["ct"]``, ``made.get("pa_bs")``, ``"figure" in
    paths`` on the variables :data:`BY_ROLE` matches."""
    def by_role(node):
        return isinstance(node, ast.Name) and BY_ROLE.match(node.id)

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and by_role(node.value):
            yield from ((node.lineno, s) for s in _string(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and by_role(node.func.value) and node.args:
            yield from ((node.lineno, s) for s in _string(node.args[0]))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(by_role(c) for c in node.comparators):
            yield from ((node.lineno, s) for s in _string(node.left))


def _file_names() -> list[str]:
    """The table's file names as they stand in code: the fixed part of each ``--output`` pattern (``_uncertainty``,
    ``_pa_bone_suppressed.png``) and the demo's names, but for the radiographs' (``pa.png``: the usual name of an
    input radiograph too, as in ``--pa pa.png``)."""
    fixed = [role.filename_pattern.replace("{stem}", "").replace("{suffix}", "") for role in OUTPUT_ROLES
             if role.filename_pattern]
    demo_files = [role.demo_filename for role in OUTPUT_ROLES if role.demo_filename and role.kind != RADIOGRAPH]
    return [name for name in [*fixed, *demo_files] if name]


# ------------------------------------------------------------------------------------------------- the table
def test_the_table_names_each_role_file_and_node_once():
    assert len(ROLES) == len(OUTPUT_ROLES)
    for column in (lambda r: r.filename_pattern, lambda r: r.demo_filename, lambda r: r.slicer and r.slicer.parameter,
                   lambda r: r.slicer and r.slicer.label):
        values = [column(role) for role in OUTPUT_ROLES if column(role)]
        assert len(values) == len(set(values))
    options = {OUTPUT, FROM_CT, EXTRAS, IMAGES_ONLY, DICOM_FOLDER}
    for role in OUTPUT_ROLES:
        assert role.kind in {CT, MAP, RADIOGRAPH, BONE_SUPPRESSED, FIGURE, REPORT, DICOM}, role
        assert role.written_with <= options and role.description, role
        assert (role.source is not None) == (role.kind in VOLUME_KINDS + IMAGE_KINDS), role  # what the writer writes
        assert (role.view in ("PA", "LAT")) == (role.kind in IMAGE_KINDS), role
        assert role.filename_pattern is None or role.filename_pattern.startswith("{stem}"), role


def test_output_paths_keep_the_names_reconstruct_has_always_written(tmp_path):
    paths = reconstruct.output_paths(tmp_path / "ct.nii.gz", extras=True, from_ct=True)
    assert {role: path.name for role, path in paths.items()} == {
        "ct": "ct.nii.gz", "reference": "ct_reference.nii.gz", "pa": "ct_pa.png", "lat": "ct_lat.png",
        "uncertainty": "ct_uncertainty.nii.gz", "from_bone_suppressed": "ct_from_bone_suppressed.nii.gz",
        "branch_difference": "ct_branch_difference.nii.gz", "pa_bs": "ct_pa_bone_suppressed.png",
        "lat_bs": "ct_lat_bone_suppressed.png", "figure": "ct_figure.png", "report": "ct_report.json"}
    assert all(path.parent == tmp_path for path in paths.values())
    assert reconstruct.output_paths(Path("CT.NRRD"), extras=False) == {"ct": Path("CT.NRRD")}
    preview = reconstruct.output_paths(tmp_path / "a.mha", extras=False, images_only=True)
    assert [path.name for path in preview.values()] == ["a_pa_bone_suppressed.png", "a_lat_bone_suppressed.png"]
    assert "figure" not in reconstruct.output_paths(tmp_path / "a.nrrd", extras=True, figure=False)


def test_the_slicer_glue_reads_its_roles_off_the_table():
    from DCTNetSlicerLib import layout, results

    shown = [role for role in OUTPUT_ROLES if role.slicer is not None]
    assert set(results.OUTPUT_PARAMETERS) == {role.name for role in shown} == \
        set(results.VOLUME_ROLES) | set(results.IMAGE_ROLES)
    assert set(results.COLOUR_MAP_ROLES) == {role.name for role in shown if role.kind == MAP}
    assert set(layout.RADIOGRAPH_ROLES.values()) == set(layout.RADIOGRAPH_VIEWS)  # every view shows one role


# -------------------------------------------------------------------------------------- nowhere else
@pytest.mark.parametrize("path", USERS, ids=lambda p: p.name)
def test_no_role_is_listed_outside_the_table(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lists = [f"line {line}: {sorted(names)}" for line, items in _collections(tree)
             for names in [set(items) & set(ROLES)] if len(names) >= 2 and names - INPUT_NAMES]
    assert not lists, f"{path.name} lists output roles; derive them from DCTNetLib.output_roles:\n" + "\n".join(lists)
    unknown = [f"line {line}: {name!r}" for line, name in _role_lookups(tree) if name not in ROLES and
               name not in SLICER_MADE]
    assert not unknown, f"{path.name} looks up roles the table does not have:\n" + "\n".join(unknown)


@pytest.mark.parametrize("path", USERS, ids=lambda p: p.name)
def test_no_output_file_name_is_written_outside_the_table(path):
    names = _file_names()
    found = [f"line {node.lineno}: {name!r} in {node.value!r}" for node in ast.walk(ast.parse(path.read_text("utf-8")))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             for name in names if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", node.value)]
    assert not found, f"{path.name} names output files; take them from DCTNetLib.output_roles:\n" + "\n".join(found)


def test_the_static_checks_catch_a_role_list_a_file_name_and_an_unknown_role():
    tree = ast.parse('PARAMS = {"ct": "ctVolume", "uncertainty": "uncertaintyVolume"}\n'
                     'inputs = {"pa": 1, "lat": 2}\n'
                     'paths.update(figure=1, report=2)\n'
                     'x = paths["soft_tissue"]\n')
    assert [sorted(set(items) & set(ROLES)) for _, items in _collections(tree)] == [
        ["ct", "uncertainty"], ["lat", "pa"], ["figure", "report"]]
    assert list(_role_lookups(tree)) == [(4, "soft_tissue")]
    assert "ct_uncertainty.nii.gz" in _file_names() and "_pa_bone_suppressed.png" in _file_names()


# --------------------------------------------------------------------------------------- the files written
def test_the_demo_writes_exactly_the_table_s_demo_files(tmp_path, tiny_bundle_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--phantom", "--output", str(out), "--weights", str(tiny_bundle_path),
                     "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(role.demo_filename for role in demo.DEMO_ROLES)
    assert demo.output_paths(out) == {role.name: out / role.demo_filename for role in OUTPUT_ROLES
                                      if role.demo_filename}


def test_reconstruct_from_a_ct_writes_exactly_its_output_paths(tmp_path, tiny_bundle_path, tiny_phantom_ct):
    from DCTNetLib.io.ct import write_ct

    ct_path = write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz")
    out = tmp_path / "out" / "recon.nrrd"
    out.parent.mkdir()
    assert cli.main(["reconstruct", "--ct", str(ct_path), "--output", str(out), "--weights", str(tiny_bundle_path),
                     "--device", "cpu", "--extras"]) == 0
    expected = reconstruct.output_paths(out, extras=True, from_ct=True)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(path.name for path in expected.values())


def test_the_readme_names_the_demo_files_of_the_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("The demo writes"):].split("\n\n", 1)[0]
    named = set(re.findall(r"`([\w.]+\.(?:nii\.gz|png|json))`", paragraph))
    demo_files = {role.demo_filename for role in demo.DEMO_ROLES}
    assert named <= demo_files
    assert {role.demo_filename for role in demo.DEMO_ROLES if role.kind not in IMAGE_KINDS} <= named
