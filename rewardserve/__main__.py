"""`python -m rewardserve ...`: the same command as `treegrpo reward-serve ...`."""

import sys

from rewardserve.cli import main

sys.exit(main())
