"""taemi: a competition kit for the ABAW Emotional Mimicry Intensity (EMI) challenge.

Data flows one way: media -> features -> packed cache -> level-1 models -> stacker ->
submission. Each step lives in its own module; `taemi.cli` strings them together.
"""

import os

# torch's OpenMP threads spin while they wait for work: with any other busy process on the
# cores, a TAEMI fold on 2 threads took 121 s; waiting passively brought it to 14 s
# (benchmarks/RESULTS.md, "Scaling out"). It must be set before torch is first imported;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
