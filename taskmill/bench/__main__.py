"""``python -m taskmill.bench CASE ROWS …``: one worker process of ``taskmill bench``
(:func:`taskmill.bench.runner.worker_main`)."""

import sys

from .runner import worker_main

if __name__ == "__main__":
    worker_main(sys.argv[1:])
