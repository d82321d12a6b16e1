#!/usr/bin/env python3
"""Finetune a recognizer on labelled photos: DATA_DIR/train/<person>/* (and optionally val/<person>/*). (The same as `facetool finetune`; the code is in recognizer/cli/finetune.py.)"""
from recognizer.cli import command

main = command("finetune")

__all__ = ["main"]

if __name__ == "__main__":
    main()
