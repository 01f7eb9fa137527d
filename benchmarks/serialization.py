# SPDX-License-Identifier: Apache-2.0
"""What encoding and decoding a message cost, per size, with and without
orjson: ``python -m benchmarks.serialization [--sizes 100,10240,1048576]``.

A message is ``{"id": ..., "payload": "x" * size, "tags": [...], "ratio":
0.25}``, a JSON object like those components send. Each figure is the best
of five timings of as many calls as fit in about 0.2 s, in microseconds per
message; ``encode`` is :func:`occo.util.communication.codec.encode` (the
producer's whole encoding step), ``decode`` is
:func:`~occo.util.communication.codec.decode` (the consumer's, with its
nesting check), each once with :mod:`json` alone and once with orjson
(:func:`occo.util.communication.json_text.use_fast`). No broker is needed.
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
    """``(encode json, encode orjson, decode json, decode orjson)`` in us;
    the orjson figures are None when it is not installed."""
    value = message(size)
    body, content_type = codec.encode(value)
    json_text.use_fast(False)
    try:
        encode_json = per_call(codec.encode, value)
        decode_json = per_call(codec.decode, body, content_type)
    finally:
        fast = json_text.use_fast(True)
    if not fast:
        return encode_json, None, decode_json, None
    return (encode_json, per_call(codec.encode, value), decode_json,
            per_call(codec.decode, body, content_type))


def _pair(plain, fast):
    """``'12.0 us  1.5 us  8.0x'``, or the plain figure alone."""
    if fast is None:
        return '{:>9.1f} us  {:>10}  {:>7}'.format(plain, '-', '-')
    return '{:>9.1f} us  {:>7.1f} us  {:>6.1f}x'.format(plain, fast, plain / fast)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.serialization')
    parser.add_argument('--sizes', default='100,10240,1048576',
                        help='payload sizes in bytes, comma separated')
    args = parser.parse_args(argv)
    print('{:>11}  {:>12}  {:>10}  {:>7}  {:>12}  {:>10}  {:>7}'.format(
        'size (B)', 'encode json', 'orjson', 'speedup', 'decode json', 'orjson',
        'speedup'))
    for size in (int(s) for s in args.sizes.split(',')):
        encode_json, encode_fast, decode_json, decode_fast = measure(size)
        print('{:>11,}  {}  {}'.format(size, _pair(encode_json, encode_fast),
                                       _pair(decode_json, decode_fast)))


if __name__ == '__main__':
    main()
