"""`python -m sse_proxy --config FILE` runs the proxy."""

from sse_proxy.server import main

main()
