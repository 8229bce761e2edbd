"""A plain (non-editable) install must carry the whole config tree."""

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_the_wheel_ships_every_config_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ippo_cli-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("ippo_cli/conf/")}
    expected = {
        f"ippo_cli/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")
    }
    assert expected and shipped == expected
