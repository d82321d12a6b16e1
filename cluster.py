#!/usr/bin/env python3
"""Group the faces a model cannot name into candidate people. (The same as `facetool cluster`; the code is in recognizer/cli/cluster.py.)"""
from recognizer.cli import command

main = command("cluster")

__all__ = ["main"]

if __name__ == "__main__":
    main()
