"""`python -m vidrender` and `accelerate launch -m vidrender ...` enter the CLI here."""

from vidrender.cli import main

if __name__ == "__main__":
    main()
