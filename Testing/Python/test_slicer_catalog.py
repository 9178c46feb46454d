"""The Extensions Index's acceptance rules, applied offline to this repository.

Slicer's catalog (github.com/Slicer/ExtensionsIndex) runs ``scripts/check_description_files.py`` on every
submitted ``<Extension>.json`` and validates it against the JSON schema its ``$schema`` names
(Slicer/Slicer ``Schemas/slicer-extension-catalog-entry-schema-v1.0.*.json``). The rules below restate what those
files check (read from ExtensionsIndex at commit 08798e56 and the v1.0.1 / v1.0.2 schemas), in our own code and
without the network: where the index downloads a URL, the URL is mapped back to the file in this checkout (the
catalog reads ``main`` of ``scm_url``), and the file itself is checked.

Each rule is a function that returns the problems it finds, so the negative cases below prove that every rule
can fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
DESCRIPTION = REPO / "DCTNet.json"

# -- facts of the catalog ------------------------------------------------------------------------------------------
# Schema versions: the keys each allows (additionalProperties: false), their JSON types, enums and ranges.
_COMMON_PROPERTIES = {"$schema": "string", "category": "string", "scm_url": "string", "scm_revision": "string",
                      "scm_type": "string", "build_dependencies": "array", "build_subdirectory": "string",
                      "enabled": "boolean", "tier": "integer"}
SCHEMAS = {
    "v1.0.1": {"required": ("$schema", "category", "scm_url"), "properties": _COMMON_PROPERTIES,
               "enums": {"scm_type": ("git", "local"), "tier": (1, 3, 5)}, "ranges": {}},
    "v1.0.2": {"required": ("$schema", "category", "scm_url"),
               "properties": {**_COMMON_PROPERTIES, "dicom_support_rule": "string"},
               "enums": {"scm_type": ("git", "local")}, "ranges": {"tier": (1, 5)}},
}
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-{}.json"
# Categories the index accepts (its ACCEPTED_EXTENSION_CATEGORIES); only the ones near ours are needed to decide.
ACCEPTED_CATEGORIES = frozenset({"Tomographic Reconstruction", "Segmentation", "Registration", "Filtering",
                                 "Quantification", "Utilities", "Examples", "Developer Tools", "IGT", "Rendering"})
SCM_SCHEMES = ("git", "https")
LICENSE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
# Content types the index accepts for icon and screenshot URLs, by file suffix (what raw.githubusercontent serves).
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}
RAW_HOST = "raw.githubusercontent.com"

_JSON_TYPES = {"string": str, "array": list, "boolean": bool, "integer": int}


# -- the rules -----------------------------------------------------------------------------------------------------
def schema_problems(entry: dict) -> list[str]:
    """What the catalog-entry schema named by ``$schema`` rejects."""
    version = next((v for v in SCHEMAS if entry.get("$schema", "").rstrip("#") == SCHEMA_URL.format(v)), None)
    if version is None:
        return [f"$schema {entry.get('$schema')!r} is not a known catalog-entry schema"]
    schema = SCHEMAS[version]
    problems = [f"missing required key {key}" for key in schema["required"] if key not in entry]
    for key, value in entry.items():
        kind = schema["properties"].get(key)
        if kind is None:
            problems.append(f"{key} is not allowed by schema {version}")
            continue
        python_type = _JSON_TYPES[kind]
        if type(value) is not python_type:  # bool is not an integer in JSON
            problems.append(f"{key} must be a JSON {kind}")
            continue
        if key in schema["enums"] and value not in schema["enums"][key]:
            problems.append(f"{key}={value!r} not in {schema['enums'][key]}")
        if key in schema["ranges"] and not schema["ranges"][key][0] <= value <= schema["ranges"][key][1]:
            problems.append(f"{key}={value!r} outside {schema['ranges'][key]}")
        if kind == "array" and not all(isinstance(item, str) for item in value):
            problems.append(f"{key} items must be strings")
    return problems


def repository_name(scm_url: str) -> str:
    return Path(urlsplit(scm_url).path).name.removesuffix(".git")


def scm_problems(entry: dict) -> list[str]:
    """Category, SCM URL syntax and the repository name (ours is stricter: it must *start* with ``Slicer``)."""
    problems = []
    if entry.get("category") not in ACCEPTED_CATEGORIES:
        problems.append(f"category {entry.get('category')!r} is unknown to the index")
    url = entry.get("scm_url", "")
    if "://" not in url or urlsplit(url).scheme not in SCM_SCHEMES:
        problems.append(f"scm_url {url!r} is not scheme://host/path with scheme {SCM_SCHEMES}")
    name = repository_name(url)
    if "slicer" not in name.lower() or not name.startswith("Slicer"):
        problems.append(f"repository name {name!r} must start with 'Slicer' (e.g. 'Slicer{name}')")
    return problems


def cmake_setting(text: str, name: str) -> str | None:
    """A ``set(NAME "value")`` of the top-level CMakeLists.txt, matched the way the index matches it."""
    match = re.search(rf'set\s*\({name}\s*"([^"]+)"[ ]*\)', text, flags=re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else None


def local_file_for_url(url: str, entry: dict, root: Path) -> Path | None:
    """The checkout's file behind a raw.githubusercontent URL of the repository in ``scm_url`` (None otherwise)."""
    parts = urlsplit(url)
    owner_repo = "/".join(urlsplit(entry["scm_url"]).path.strip("/").removesuffix(".git").split("/")[:2])
    prefix = f"/{owner_repo}/{entry.get('scm_revision', 'main')}/"
    if parts.scheme != "https" or parts.netloc != RAW_HOST or not parts.path.startswith(prefix):
        return None
    return root / parts.path[len(prefix):]


def image_problems(url: str, what: str, entry: dict, root: Path) -> list[str]:
    """The index downloads the URL and wants an image content type; here: the same file, decoded."""
    from PIL import Image, UnidentifiedImageError

    if not url.startswith("http"):
        return [f"{what} {url!r} must start with http"]
    path = local_file_for_url(url, entry, root)
    if path is None:
        return [f"{what} {url!r} is not a raw.githubusercontent URL of {entry['scm_url']} at its scm_revision"]
    if not path.is_file():
        return [f"{what} {url!r}: {path.relative_to(root)} does not exist in the repository"]
    expected = IMAGE_SUFFIXES.get(path.suffix.lower())
    if expected is None:
        return [f"{what} {url!r}: served as {path.suffix or 'no suffix'}, not png/jpeg/gif"]
    try:
        with Image.open(path) as image:
            image.load()
            found = image.format
    except (UnidentifiedImageError, OSError) as exc:
        return [f"{what} {url!r}: {path.name} is not a readable image ({exc})"]
    return [] if found == expected else [f"{what} {url!r}: {path.name} is {found}, its name says {expected}"]


def cmake_problems(extension_name: str, cmake_text: str, entry: dict, root: Path) -> list[str]:
    """project() name = description file name; icon and screenshot URLs set and real images."""
    problems = []
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake_text, flags=re.IGNORECASE | re.MULTILINE)
    if not project or project[0].strip("\"'") != extension_name:
        problems.append(f"project() name {project[:1]} does not match the description file name {extension_name!r}")
    icon = cmake_setting(cmake_text, "EXTENSION_ICONURL")
    problems += image_problems(icon, "EXTENSION_ICONURL", entry, root) if icon else ["no EXTENSION_ICONURL"]
    screenshots = (cmake_setting(cmake_text, "EXTENSION_SCREENSHOTURLS") or "").split()
    if not screenshots:
        problems.append("no EXTENSION_SCREENSHOTURLS")
    for url in screenshots:
        problems += image_problems(url, "EXTENSION_SCREENSHOTURLS", entry, root)
    return problems


def license_problems(root: Path) -> list[str]:
    return [] if any((root / name).is_file() for name in LICENSE_NAMES) else ["no license file in the repository root"]


def all_problems(description: Path, root: Path) -> list[str]:
    entry = json.loads(description.read_text(encoding="utf-8"))
    cmake_text = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    return (schema_problems(entry) + scm_problems(entry) + cmake_problems(description.stem, cmake_text, entry, root)
            + license_problems(root))


# -- this repository -----------------------------------------------------------------------------------------------
def test_the_catalog_would_accept_the_extension():
    assert all_problems(DESCRIPTION, REPO) == []


def test_catalog_entry_agrees_with_the_cmake_metadata():
    entry = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    cmake_text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert entry["build_dependencies"] == cmake_setting(cmake_text, "EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert cmake_setting(cmake_text, "EXTENSION_CATEGORY") == entry["category"]
    homepage = cmake_setting(cmake_text, "EXTENSION_HOMEPAGE")
    assert homepage == entry["scm_url"].removesuffix(".git")


def test_license_is_the_apache_2_0_text_that_pyproject_names():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.split()) > 1500  # the full licence, not a stub
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"]["text"] == "Apache-2.0"


def test_the_icon_is_dctnet_png_at_the_top_level_and_screenshots_are_in_resources():
    """The extension's design puts its icon, DCTNet.png, at the top level; screenshots live in Resources/."""
    cmake_text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    entry = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    icon = local_file_for_url(cmake_setting(cmake_text, "EXTENSION_ICONURL"), entry, REPO)
    assert icon.relative_to(REPO) == Path("DCTNet.png") and icon.is_file()
    for url in cmake_setting(cmake_text, "EXTENSION_SCREENSHOTURLS").split():
        assert local_file_for_url(url, entry, REPO).relative_to(REPO).parts[0] == "Resources", url


def test_the_screenshot_is_captioned_honestly_in_the_docs():
    """The published image is the demo's reconstruction figure, and docs/slicer.md says so and how to replace it."""
    cmake_text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    name = Path(urlsplit(cmake_setting(cmake_text, "EXTENSION_SCREENSHOTURLS").split()[0]).path).name
    docs = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    section = docs.split("## Screenshots", 1)[1].split("\n## ", 1)[0]
    assert name in section
    assert "not a screenshot of Slicer" in section and "dctnet demo" in section
    assert "Save screenshot" in section  # how to make the real one


# -- every rule can fail -----------------------------------------------------------------------------------------
def _entry(**changes) -> dict:
    entry = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize("changes, expected", [
    ({"scm_url": "https://github.com/dctnet/DCTNet.git"}, "must start with 'Slicer'"),
    ({"scm_url": "https://github.com/dctnet/dctnet-slicer.git"}, "must start with 'Slicer'"),
    ({"scm_url": "ftp://github.com/dctnet/SlicerDCTNet.git"}, "scheme"),
    ({"category": "Reconstruction"}, "unknown to the index"),
    ({"tier": 2}, "not in (1, 3, 5)"),
    ({"tier": True}, "must be a JSON integer"),
    ({"homepage": "https://x"}, "not allowed"),
    ({"category": None}, "missing required key category"),
    ({"$schema": SCHEMA_URL.format("v1.0.2"), "tier": 7}, "outside (1, 5)"),
    ({"build_dependencies": "PyTorch"}, "must be a JSON array"),
])
def test_bad_entries_are_refused(changes, expected):
    entry = _entry(**changes)
    problems = schema_problems(entry) + scm_problems(entry)
    assert any(expected in p for p in problems), problems


def test_missing_license_and_screenshot_and_a_non_image_are_refused(tmp_path):
    root = tmp_path / "SlicerDCTNet"
    root.mkdir(parents=True)
    (root / "DCTNet.png").write_bytes((REPO / "DCTNet.png").read_bytes())
    cmake_text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    (root / "CMakeLists.txt").write_text(cmake_text, encoding="utf-8")
    description = root / "DCTNet.json"
    description.write_text(DESCRIPTION.read_text(encoding="utf-8"), encoding="utf-8")
    problems = all_problems(description, root)
    assert "no license file in the repository root" in problems
    assert any("does not exist in the repository" in p and "EXTENSION_SCREENSHOTURLS" in p for p in problems)
    # a text file dressed up as a PNG
    screenshot = local_file_for_url(cmake_setting(cmake_text, "EXTENSION_SCREENSHOTURLS"), _entry(), root)
    screenshot.parent.mkdir(parents=True)
    screenshot.write_text("mock-up")
    (root / "LICENSE").write_text("Apache-2.0")
    assert [p for p in all_problems(description, root) if "not a readable image" in p]
    # the old location of the screenshot, and a project() name that does not match the file name
    old = cmake_text.replace("Resources/Screenshots/reconstruction_figure_lidc0001.png", "docs/screenshots/x.png")
    assert any("x.png" in p for p in cmake_problems("DCTNet", old, _entry(), REPO))
    assert any("does not match" in p for p in cmake_problems("SlicerDCTNet", cmake_text, _entry(), REPO))
