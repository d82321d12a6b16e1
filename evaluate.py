#!/usr/bin/env python3
"""Report how well a model names people: classifier vs kNN vs combined, unknown rejection, pairs. (The same as `facetool evaluate`; the code is in recognizer/cli/evaluate.py.)"""
from recognizer.cli import command

main = command("evaluate")

__all__ = ["main"]

if __name__ == "__main__":
    main()
