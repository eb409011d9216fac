"""`python bot.py`: the Liteyuki host, with NoneBot as its child process `nonebot`.

Copy this file into a NoneBot project folder (next to its pyproject.toml) and run it
there: host plugins come from `[tool.liteyuki]`, NoneBot's adapters and plugins from
`[tool.nonebot]` (where `nb plugin install` / `nb adapter install` write them), and
NoneBot reads the folder's `.env` files itself (DRIVER, HOST, PORT, SUPERUSERS…).
`python bot.py --reload`: development mode (README: "Development mode").
"""

import argparse
from pathlib import Path

from liteyuki import LiteyukiBot
from liteyuki.process import run_nonebot

HERE = Path(__file__).resolve().parent

# The guard is required: children are spawned, and a spawned process imports this
# file again; without it the host reports one error and exits.
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the Liteyuki host with NoneBot as its child process.")
    parser.add_argument("--reload", action="store_true", help="restart what changed when a plugin or config is edited")
    args = parser.parse_args()
    bot = LiteyukiBot(pyproject=HERE / "pyproject.toml", **({"reload": True} if args.reload else {}))
    bot.process_manager.add_target("nonebot", run_nonebot, kwargs={"pyproject": HERE / "pyproject.toml"})
    bot.run()
