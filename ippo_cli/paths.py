"""Where the packaged Hydra config tree lives."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# A wheel install ships conf/ inside the package; a source checkout keeps it at the top.
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
