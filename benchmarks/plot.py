# SPDX-License-Identifier: Apache-2.0
"""Charts of one benchmark run, as PNG files.

``python -m benchmarks --plot DIR`` writes them after the table; ``python
-m benchmarks.plot RESULTS.json DIR`` draws them again from a results file.
They need matplotlib (the ``bench`` extra) and draw with its Agg backend,
so no display is needed.

* ``throughput-<size>.png``, one per message size: a panel per case that
  compares at least two clients (raw pika, this library, kombu, aio-pika,
  AMQPStorm), one bar per row of the table, coloured by client, hatched
  when the row waits for publisher confirms, labelled with its rate and
  its ratio to raw pika. Each panel has its own scale: sequential RPC
  makes hundreds of calls per second, publishing tens of thousands of
  messages.
* ``rpc-latency-cdf.png``: the distribution of per-call latency of the
  ``rpc-seq`` rows, a panel per size, log time axis; the runs of a row are
  pooled (:mod:`benchmarks.cdf`).

Every chart has a footer with the machine (CPU model, cores), Python,
pika, RabbitMQ (and the classic queue version, if the run chose one) and
the other clients' versions, the date and the number of runs: numbers
from another machine are another story.
"""

import argparse
import json
import os
import sys

from .cdf import pooled
from .report import size_label

__all__ = ['write_charts', 'client_of', 'footer', 'main']

#: Client -> bar colour (colour-blind safe, Okabe-Ito).
COLOURS = {
    'occo.util.communication': '#0072B2',
    'raw pika': '#999999',
    'kombu': '#009E73',
    'aio-pika': '#D55E00',
    'amqpstorm': '#CC79A7',
}
#: Cases whose rows compare nothing across clients.
SKIP_CASES = ('idle', 'memory', 'rss')


def client_of(row):
    """Which client a row measures: its ``client``, else by its impl."""
    if row.get('client'):
        return row['client']
    impl = row.get('impl', '')
    if impl.startswith('library'):
        return 'occo.util.communication'
    if impl.startswith('raw'):
        return 'raw pika'
    return None


def _confirmed(row):
    """Does the row wait for publisher confirms?"""
    if row.get('label') != 'publish-transient' and row.get(
            'case') != 'publish-durable':
        return False
    impl = row.get('impl', '')
    return 'confirmed' in impl or impl.startswith('library')


def footer(document):
    """The machine and versions a run was measured on, in one or two lines."""
    env = document.get('environment', {})
    workload = document.get('workload', {})
    clients = env.get('clients') or {}
    versions = ', '.join('{} {}'.format(name, version)
                         for name, version in clients.items() if version)
    machine = '{}, {} cores'.format(env.get('cpu_model') or 'unknown CPU',
                                    env.get('cpus', '?'))
    storage = ('' if env.get('queue_version') is None else
               ' (classic queue version {})'.format(env['queue_version']))
    return ('{date}: {machine}, load {load:.1f} at start; Python {python}, '
            'pika {pika}, {broker}{storage} on loopback\n'
            'occo.util.communication {occo}{versions}; median of {runs} '
            'run(s){quick}').format(
                date=(document.get('date') or '')[:10], machine=machine,
                load=env.get('loadavg_start') or 0.0,
                python=env.get('python', '?'), pika=env.get('pika', '?'),
                broker=env.get('broker') or 'no broker', storage=storage,
                occo=env.get('occo', '?'),
                versions=', ' + versions if versions else '',
                runs=workload.get('runs', '?'),
                quick=', --quick: smoke counts, not a measurement'
                if workload.get('quick') else '')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _sizes(rows):
    sizes = []
    for row in rows:
        if row.get('size') not in sizes:
            sizes.append(row.get('size'))
    return sizes


def _panels(rows):
    """``[(label, unit, rows)]`` of the labels that compare clients."""
    labels = []
    for row in rows:
        if row.get('case') in SKIP_CASES or row['label'] in labels:
            continue
        labels.append(row['label'])
    panels = []
    for label in labels:
        group = [r for r in rows if r['label'] == label]
        clients = {client_of(r) for r in group if r.get('rate')}
        if len(clients - {None}) >= 2:
            unit = next(r['unit'] for r in group if r.get('rate'))
            panels.append((label, unit, group))
    return panels


def _legend(fig, plt):
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour)
               for colour in COLOURS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor='white',
                                 edgecolor='black', hatch='///'))
    fig.legend(handles, list(COLOURS) + ['waits for confirms'], loc='upper '
               'center', ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.985))


def _throughput(plt, document, rows, size, path):
    panels = _panels(rows)
    if not panels:
        return None
    heights = [max(2, len(group)) * 0.26 + 0.5 for _, _, group in panels]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(8.5, sum(heights) + 1.3),
                             gridspec_kw={'height_ratios': heights})
    for ax, (label, unit, group) in zip(axes[:, 0], panels):
        rates = [r.get('rate') or 0.0 for r in group]
        top = max(rates) or 1.0
        y = list(range(len(group)))
        for i, row in enumerate(group):
            client = client_of(row)
            ax.barh(i, rates[i], height=0.7,
                    color=COLOURS.get(client, '#56B4E9'),
                    hatch='///' if _confirmed(row) else None,
                    edgecolor='black' if _confirmed(row) else 'none',
                    linewidth=0.4)
            if row.get('rate'):
                text = '{:,.0f}'.format(row['rate'])
                if row.get('ratio') and row.get('impl') != row.get('baseline'):
                    text += '  ({:.2f}x raw)'.format(row['ratio'])
            elif row.get('error'):
                text = 'error'
            else:
                text = row.get('notes') or 'no result'
            ax.text(rates[i] + top * 0.01, i, text, va='center', fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels([r['impl'] for r in group], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.32)
        ax.set_title('{} ({})'.format(label, unit), fontsize=9, loc='left')
        ax.tick_params(axis='x', labelsize=7)
        ax.grid(axis='x', linewidth=0.3)
        ax.set_axisbelow(True)
    fig.suptitle('Throughput, {} messages (higher is better)'.format(
        size_label(size)), fontsize=11, y=0.995, va='top',
        x=0.5)
    _legend(fig, plt)
    fig.text(0.01, 0.005, footer(document), fontsize=6.5, va='bottom')
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.45 / height))
    _save(fig, plt, path)
    return path


def _latency(plt, document, rows, sizes, path):
    from matplotlib import ticker
    groups = []
    for size in sizes:
        series = [(r, pooled(r)) for r in rows
                  if r.get('size') == size and r.get('case') == 'rpc-seq']
        series = [(r, values) for r, values in series if values]
        if series:
            groups.append((size, series))
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), squeeze=False, sharey=True,
                             figsize=(max(8.5, 4.2 * len(groups) + 1.0),
                                      4.6))
    styles = ['-', '--', ':', '-.']
    for ax, (size, series) in zip(axes[0], groups):
        seen = {}
        for row, values in series:
            client = client_of(row)
            style = styles[seen.get(client, 0) % len(styles)]
            seen[client] = seen.get(client, 0) + 1
            n = len(values)
            ax.plot(values, [(i + 0.5) / n for i in range(n)],
                    drawstyle='steps-post', linestyle=style, linewidth=1.3,
                    color=COLOURS.get(client, '#56B4E9'),
                    label='{} (p50 {:.2f} ms)'.format(
                        row['impl'], row.get('p50_ms') or 0.0))
        ax.set_xscale('log')
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(
            lambda value, _: '{:g}'.format(value)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title('rpc-seq, {} messages'.format(size_label(size)),
                     fontsize=9)
        ax.set_xlabel('latency per call, ms (log scale)', fontsize=8)
        ax.grid(which='both', linewidth=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5, loc='lower right')
    axes[0][0].set_ylabel('fraction of calls at or below', fontsize=8)
    fig.suptitle('Sequential RPC latency, cumulative distribution '
                 '(left is better)', fontsize=11, y=1 - 0.08 / 4.6, va='top')
    fig.text(0.01, 0.005, footer(document), fontsize=6.5, va='bottom')
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width,
                        top=1 - 0.6 / height, bottom=0.95 / height,
                        wspace=0.08)
    _save(fig, plt, path)
    return path


def _save(fig, plt, path):
    """Write ``fig`` as a PNG of 256 colours at most: a third of the
    bytes, the same picture (the charts have a handful of flat colours)."""
    fig.savefig(path, dpi=100)
    plt.close(fig)
    try:
        from PIL import Image   # matplotlib needs Pillow, so it is there
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert('RGB').quantize(colors=256)
    small.save(path, optimize=True)


def _slug(size):
    return size_label(size).replace(' ', '').replace(',', '').lower()


def write_charts(document, directory):
    """Write the charts of the results ``document`` to ``directory``.

    :returns: the paths written.
    :raises ImportError: without matplotlib.
    """
    plt = _pyplot()
    os.makedirs(directory, exist_ok=True)
    # Results written before --sizes have one size, in message_bytes.
    rows = [dict(r, size=r.get('size', document.get('message_bytes')))
            for r in document.get('rows', [])]
    sizes = _sizes(rows)
    written = []
    for size in sizes:
        path = _throughput(plt, document,
                           [r for r in rows if r.get('size') == size], size,
                           os.path.join(directory, 'throughput-{}.png'.format(
                               _slug(size))))
        if path:
            written.append(path)
    path = _latency(plt, document, rows, sizes,
                    os.path.join(directory, 'rpc-latency-cdf.png'))
    if path:
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.plot',
        description='Draw the charts of a benchmark results file.')
    parser.add_argument('results', help='a results JSON file')
    parser.add_argument('directory', help='where to write the PNG files')
    args = parser.parse_args(argv)
    with open(args.results) as f:
        document = json.load(f)
    for path in write_charts(document, args.directory):
        print('chart written to {}'.format(path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
