# SPDX-License-Identifier: Apache-2.0
"""What encoding and decoding a message cost, per size, with and without
orjson: ``python -m benchmarks.serialization [--sizes 100,10240,1048576]``.

A message is ``{"id": ..., "payload": "x" * size, "tags": [...], "ratio":
0.25}``, a JSON object like those components send. Each figure is the best
of five timings of as many calls as fit in about 0.2 s, in microseconds per
message; ``encode`` is :func:`occo.util.communication.codec.encode` (the
producer's whole encoding step), ``decode`` is
:func:`~occo.util.communication.codec.decode` (the consumer's, with its
nesting check). No broker is needed.
"""

import argparse
import timeit

from occo.util.communication import codec, json_text


def message(size):
    return {'id': 12345, 'payload': 'x' * size, 'tags': ['a', 'b'], 'ratio': 0.25}


def per_call(function, *args):
    """Microseconds per call: the best of five timings."""
    timer = timeit.Timer(lambda: function(*args))
    number, _ = timer.autorange()
    number = max(1, number)
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def measure(size):
    """``(encode with json, encode with orjson or None, decode)`` in us."""
    value = message(size)
    body, content_type = codec.encode(value)
    json_text.use_fast(False)
    try:
        encode_json = per_call(codec.encode, value)
        decode = per_call(codec.decode, body, content_type)
    finally:
        fast = json_text.use_fast(True)
    return encode_json, per_call(codec.encode, value) if fast else None, decode


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.serialization')
    parser.add_argument('--sizes', default='100,10240,1048576',
                        help='payload sizes in bytes, comma separated')
    args = parser.parse_args(argv)
    print('{:>11}  {:>13}  {:>15}  {:>8}  {:>11}'.format(
        'size (B)', 'encode json', 'encode orjson', 'speedup', 'decode'))
    for size in (int(s) for s in args.sizes.split(',')):
        encode_json, encode_fast, decode = measure(size)
        print('{:>11,}  {:>10.1f} us  {:>12}  {:>8}  {:>8.1f} us'.format(
            size, encode_json,
            '-' if encode_fast is None else '{:.1f} us'.format(encode_fast),
            '-' if encode_fast is None else '{:.1f}x'.format(encode_json / encode_fast),
            decode))


if __name__ == '__main__':
    main()
