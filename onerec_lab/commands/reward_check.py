"""`onerec-lab reward check`: the command lives in `onerec_lab.commands.reward`."""

from onerec_lab.commands.reward import RewardCheckArgs
from onerec_lab.commands.reward import run_check as run

__all__ = ["RewardCheckArgs", "run"]
