"""What the VEN tests need before they import anything of OpenADR: the 3.1.0 definition in
../shared/openadr3 (the VTN double checks every request against it), openapi-core (it
checks with it) and openadr3 (the utility's side), both from the dev extra."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

SPEC = Path(__file__).resolve().parents[3] / "shared" / "openadr3" / "3.1.0" / "openadr3.yaml"


def skip_without_openadr3() -> ModuleType:
    """Skip the test module being imported unless all three are there; the openadr3
    module."""
    if not SPEC.exists():
        pytest.skip("../shared/openadr3 is absent", allow_module_level=True)
    pytest.importorskip("openapi_core")  # the dev extra: the VTN double validates with it
    return pytest.importorskip("openadr3")
