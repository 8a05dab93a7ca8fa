"""``python -m attngan_fast.cli ...`` (what ``torchrun -m attngan_fast.cli train ...`` runs)."""
import sys

from . import main

sys.exit(main())
