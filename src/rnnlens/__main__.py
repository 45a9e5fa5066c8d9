import sys

from rnnlens import reproducibility  # (the package __init__ already applied it; kept explicit)

reproducibility.apply_env()

from rnnlens.cli import main  # noqa: E402

sys.exit(main())
