"""``python -m training.cli ARGS`` = ``graphsentry ARGS``."""
import sys

from training.cli import main

sys.exit(main())
