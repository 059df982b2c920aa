"""`python -m instantsr.cli ...` is `instantsr ...` (torchrun and accelerate launch start it so)."""

import sys

from . import main

sys.exit(main())
