"""The Flex Template launcher's entry file (FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile): the scheduled run,
from the package installed in the image. A file of its own, outside the package, so that the launcher's
script directory on sys.path holds nothing that could shadow a module."""

import sys

from rsdt_beam.pipelines.scheduled import main

if __name__ == "__main__":
    sys.exit(main())
