import pathlib
import sys

# The peers' shared samples module lives beside the tests.
sys.path.insert(0, str(pathlib.Path(__file__).parent))
