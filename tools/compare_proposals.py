"""Recall tables of several proposal methods on the same images, in one run, and one plot of all.

    python tools/compare_proposals.py --data voc:../shared/datasets/BCCD:test --out runs/proposals \
        --proposer "selective_search strategy=fast" \
        --proposer "combined checkpoint=runs/multibox_bccd/last.pth top_m=200"

Each --proposer is a method name followed by key=value parameters (values read as YAML). Proposals go
through the same resumable cache as `detect propose` (OUT/<method>-<params hash>/), so a method
already computed is only re-scored. Writes OUT/comparison.json and OUT/comparison.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from detect.config import parse_override
from detect.data.spec import build_dataset
from detect.evaluation.proposal_recall import format_recall_table, proposal_recall
from detect.proposals import build_proposer
from detect.proposals.cache import dataset_cache_root, ensure_proposals, proposal_path, read_proposals
from detect.report.recall_plot import plot_recall_curves
from detect.utils.files import atomic_write_bytes


def parse_proposer(text: str) -> tuple[str, dict]:
    method, *items = text.split()
    return method, dict(parse_override(item) for item in items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset spec, e.g. voc:ROOT:test")
    parser.add_argument("--proposer", action="append", required=True, metavar="'METHOD [KEY=VALUE ...]'")
    parser.add_argument("--out", required=True, help="cache root and where the comparison is written")
    parser.add_argument("--workers", type=int, default=0, help="worker processes per method (0: this process)")
    args = parser.parse_args()

    dataset = build_dataset(args.data)
    results = {}
    for text in args.proposer:
        method, params = parse_proposer(text)
        proposer = build_proposer(method, **params)
        cache_dir = ensure_proposals(dataset, proposer, dataset_cache_root(dataset, args.out), workers=args.workers)
        result = proposal_recall(dataset, lambda i: read_proposals(proposal_path(cache_dir, dataset.records[i].image_id)))
        result.update(method=method, params=proposer.params(), data=args.data, cache=str(cache_dir))
        label = text if text not in results else f"{text} #{len(results)}"
        results[label] = result
        print(f"\n== {text}\n{format_recall_table(result)}")
    out = Path(args.out)
    text = json.dumps(results, indent=2).encode()
    atomic_write_bytes(out / "comparison.json", lambda fh: fh.write(text))
    plot = plot_recall_curves({label.split()[0] if len(results) == len({t.split()[0] for t in results}) else label: r
                               for label, r in results.items()}, out / "comparison.png", title=args.data)
    print(f"\nwrote {out / 'comparison.json'} and {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
