"""`python -m jarvis`: the same CLI as the `jarvis` console script."""

from jarvis.cli import main

if __name__ == "__main__":
    main()
