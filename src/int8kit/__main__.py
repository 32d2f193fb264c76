import sys

from int8kit.cli.main import main

sys.exit(main())
