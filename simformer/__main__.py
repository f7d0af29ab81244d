import sys

from simformer.cli import main

sys.exit(main())
