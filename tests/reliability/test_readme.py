"""Both READMEs keep the reliability table this suite prints; the app's documents access control."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.monailabel.conftest import APP
from tests.reliability.summary import reliability_table


@pytest.mark.parametrize("readme", [APP / "README.md", ROOT / "README.md"], ids=["app", "top-level"])
def test_readme_table_matches_the_suite(readme):
    text = readme.read_text()
    start, end = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == reliability_table()


def test_readme_documents_auth_tls_and_limits():
    text = (APP / "README.md").read_text()
    import sys

    from medkit.core.limits import InputLimits

    sys.path.insert(0, str(APP))  # the app's own `lib` package, as MONAI Label loads it
    from lib.security import OPTIONAL_ENDPOINTS

    limits = [f"`{name}`" for name in InputLimits.__dataclass_fields__]
    for needle in ("MONAI_LABEL_AUTH_ENABLE", "--ssl_certfile", "--ssl_keyfile", "allow_remote", "max_upload_mb",
                   "127.0.0.1", "`allowed_hosts`", "`cors_origins`", "`enable_endpoints`", *limits,
                   *(f"`{group}`" for group in OPTIONAL_ENDPOINTS)):
        assert needle in text, needle
