"""`python -m processor.tools.simulator`: the simulator without the main CLI."""

from processor.tools.simulator.cli import app

if __name__ == "__main__":
    app()
