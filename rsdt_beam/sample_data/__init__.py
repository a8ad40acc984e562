"""The bundled real sample (see README.md here): shipped inside the package, so the sample job runs wherever
rsdt_beam is installed, not only from a checkout."""

import os

EOLEARN_TEST_EOPATCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eolearn_TestEOPatch")
