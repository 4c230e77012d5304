"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype, restoring the previous default after.

    Modules whose checks compare Monte Carlo estimates with closed forms to many digits use it
    for every test: `pytestmark = pytest.mark.usefixtures("float64")`."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
