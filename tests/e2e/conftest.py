from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.site import Site
from tests.support import Broker, Processes


@pytest.fixture
def site(tmp_path: Path, broker: Broker, processes: Processes) -> Iterator[Site]:
    s = Site(tmp_path, broker, processes)
    yield s
