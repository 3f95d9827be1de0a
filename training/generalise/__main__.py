"""``python -m training.generalise``: the same command line as ``python -m training.eval_suites generalise``."""
from training.generalise.run import main

raise SystemExit(main())
