#!/usr/bin/env python3
"""Enroll a person from a folder of photos, without retraining. (The same as `facetool enroll`; the code is in recognizer/cli/enroll.py.)"""
from recognizer.cli import command

main = command("enroll")

__all__ = ["main"]

if __name__ == "__main__":
    main()
