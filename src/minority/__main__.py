import sys

from minority.cli.main import main

sys.exit(main())
