"""Serve a trained model: a page to draw digits on, and a JSON API.

    python serve.py                  # http://127.0.0.1:8000: robust_cnn once trained, else the best
    python serve.py --model lenet5 --port 9000

Open the address in a browser and draw a digit; or
    curl -F image=@digit.png http://127.0.0.1:8000/predict

On a loopback --host (the default) only requests addressed to localhost, 127.0.0.1 or [::1] are
answered, so a web page cannot reach the server through DNS rebinding; docs/your-digits.md has
the limits on uploads, pixels and concurrent decodes.
"""

import argparse
import sys

from mnist_lab.config import MODELS_DIR, REQUEST_SECONDS
from mnist_lab.flags import ArgumentParser, add_model_flags, check_port_free, port_number, positive_float
from mnist_lab.startup import printable, run


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser, MODELS_DIR)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; on a loopback address, "
                        "requests whose Host header names another machine are refused)")
    parser.add_argument("--port", type=port_number(), default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--request-timeout", type=positive_float, default=REQUEST_SECONDS, metavar="SECONDS",
                        help="a connection that takes longer to send a whole request (from connecting, or from "
                             f"its last answer) is closed (default: {REQUEST_SECONDS:g})")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mnist_lab.predictor import load_predictor, ranked_models

    ranked_models(args.models_dir, args.model)  # before the web stack loads: a typo answers at once
    check_port_free(args.host, args.port, f"--host {args.host} --port {args.port}")
    import uvicorn

    from mnist_lab.serving import RequestDeadline, create_app

    predictor, reason, runtime, note = load_predictor(args.models_dir, args.model, args.runtime,
                                                      warn=lambda line: print(printable(line), file=sys.stderr))
    app = create_app(predictor, args.models_dir, host=args.host)
    print(printable(f"serving {predictor.name} ({reason}), on {runtime}{note}, on http://{args.host}:{args.port}  "
                    "(Ctrl-C stops)"))
    RequestDeadline.request_seconds = args.request_timeout
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=RequestDeadline)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
