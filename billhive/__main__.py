import sys

from billhive.cli import main

sys.exit(main())
