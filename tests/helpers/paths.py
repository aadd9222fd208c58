"""Where things are, for every test: the repository, the shared data folder beside it, the installed CLI."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/paths.py -> the repository
SHARED_DATA = ROOT.parent / "shared" / "data"
# The installed console script (`python -m medm2t` runs the same main).
MEDM2T = str(Path(sys.executable).parent / "medm2t")
DASHBOARD_APP = str(ROOT / "dashboard" / "app.py")  # for Streamlit's AppTest
