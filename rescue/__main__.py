import sys

from rescue.cli import main

sys.exit(main())
