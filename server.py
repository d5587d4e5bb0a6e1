"""Start the nodegraph server: ``python server.py [--listen 127.0.0.1] [--port 8188] ...`` (same as ``nodegraph serve``)."""

import sys

from nodegraph.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
