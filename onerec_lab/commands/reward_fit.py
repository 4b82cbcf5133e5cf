"""`onerec-lab reward fit`: the command lives in `onerec_lab.commands.reward`."""

from onerec_lab.commands.reward import RewardFitArgs
from onerec_lab.commands.reward import run_fit as run

__all__ = ["RewardFitArgs", "run"]
