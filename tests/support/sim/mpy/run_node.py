# Test entry: put the test's config.py first on the path, then run the firmware's main().
import os
import sys

sys.path.insert(0, os.getenv("FPNODE_FIRMWARE"))
sys.path.insert(0, os.getenv("FPNODE_CONFIG_DIR"))
import fpnode

fpnode.main()
