"""taemi: a competition kit for the ABAW Emotional Mimicry Intensity (EMI) challenge.

Data flows one way: media -> features -> packed cache -> level-1 models -> stacker ->
submission. Each step lives in its own module; `taemi.cli` strings them together.
"""

__version__ = "0.1.0"
