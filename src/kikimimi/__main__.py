"""`python -m kikimimi` (also what `torchrun -m kikimimi` runs)."""

from kikimimi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
