#!/usr/bin/env python3
"""Name every face in photos, or call it unknown. (The same as `facetool identify`; the code is in recognizer/cli/identify.py.)"""
from recognizer.cli import command

main = command("identify")

__all__ = ["main"]

if __name__ == "__main__":
    main()
