"""The npe2 manifest and the command line."""

import importlib
import subprocess
import sys
from pathlib import Path

import npe2

from napari_sam import KNOWN_CHECKPOINTS
from napari_sam.cli import main

ROOT = Path(__file__).parents[1]


def test_manifest_is_valid_and_installed():
    manifest = npe2.PluginManifest.from_file(ROOT / "src" / "napari_sam" / "napari.yaml")
    assert manifest.name == "napari-sam"
    installed = npe2.PluginManifest.from_distribution("napari-sam")
    assert installed.name == "napari-sam"
    assert [w.display_name for w in installed.contributions.widgets] == [
        "Segment Anything", "Segment everything", "Segment concept (SAM3)", "Image series", "Train"]
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-sam"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_widget_command_resolves():
    manifest = npe2.PluginManifest.from_distribution("napari-sam")
    module_name, _, attribute = manifest.contributions.commands[0].python_name.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))


def test_cli_lists_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KNOWN_CHECKPOINTS)


def test_license_changelog_and_lint():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text() and project["project"]["license"] == "BSD-3-Clause"
    assert {"LICENSE", "CHANGELOG.md"} <= set(project["tool"]["hatch"]["build"]["targets"]["sdist"]["include"])
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_is_short_and_its_links_resolve():
    """The README is a front page (what it is, a picture, install, two commands, usage, links); the rest is in the
    docs site. Every relative link and picture it has points at a file of the repository."""
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "pip install" in text and "scripts/demo.sh" in text and "scripts/test.sh" in text
    targets = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
               if not target.startswith(("http://", "https://", "#"))]
    assert "docs/images/demo.png" in targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, missing
