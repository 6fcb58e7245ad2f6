"""`python -m kikimimi` (also what `torchrun -m kikimimi` runs)."""

from kikimimi.cli import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
