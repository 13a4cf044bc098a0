import sys

from logitsmatch.cli import main

sys.exit(main())
