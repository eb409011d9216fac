"""`python bot.py`: the Liteyuki host, with NoneBot (console adapter) as its child `nonebot`.

Host plugins come from `[tool.liteyuki]` in pyproject.toml, NoneBot plugins from
`[tool.nonebot]` (where `nb plugin install` writes them).
"""

from pathlib import Path

from liteyuki import LiteyukiBot
from liteyuki.process import run_nonebot

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    bot = LiteyukiBot(pyproject=HERE / "pyproject.toml")
    bot.process_manager.add_target("nonebot", run_nonebot, kwargs={"pyproject": HERE / "pyproject.toml"})
    bot.run()
