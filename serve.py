#!/usr/bin/env python3
"""Serve a model over HTTP: a web page at /, a JSON API, OpenAPI docs at /docs. (The same as `facetool serve`; the code is in recognizer/cli/serve.py.)"""
from recognizer.cli import command

main = command("serve")

__all__ = ["main"]

if __name__ == "__main__":
    main()
