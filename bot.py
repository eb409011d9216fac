"""`python bot.py`: the Liteyuki host, with NoneBot (console adapter) as its child `nonebot`.

Host plugins come from `[tool.liteyuki]` in pyproject.toml, NoneBot plugins from
`[tool.nonebot]` (where `nb plugin install` writes them).
`python bot.py --reload`: development mode (README: "Development mode").
"""

import argparse
from pathlib import Path

from liteyuki import LiteyukiBot
from liteyuki.process import run_nonebot

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the Liteyuki host with NoneBot as its child process.")
    parser.add_argument("--reload", action="store_true", help="restart what changed when a plugin or config is edited")
    args = parser.parse_args()
    bot = LiteyukiBot(pyproject=HERE / "pyproject.toml", **({"reload": True} if args.reload else {}))
    bot.process_manager.add_target("nonebot", run_nonebot, kwargs={"pyproject": HERE / "pyproject.toml"})
    bot.run()
