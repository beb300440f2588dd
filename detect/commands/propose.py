"""Compute region proposals for a dataset into a resumable cache, and optionally score their recall.

One .npz per image under OUT/<dataset name>-<hash>/<method>-<params hash>/ (worker processes, progress
bar; an interrupted run resumes): the layout `detect train` / `detect test` read with
`proposals.cache_dir: OUT`, so what is computed here is reused there. `--shard K/N` (or RANK /
WORLD_SIZE under torchrun) computes one deterministic share, so N jobs on N machines fill one cache. With --eval, the recall table
(recall@0.5/0.7 for top N, average recall, MABO, boxes and seconds per image) is printed and written
as recall.json and recall.png in that directory.
"""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset spec, e.g. voc:ROOT:test")
    parser.add_argument("--method", default="selective_search",
                        help="selective_search (ours), selectivesearch (the pip package), multibox")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a proposer parameter (repeatable), e.g. strategy=fast, ks=[50,100], max_proposals=2000")
    parser.add_argument("--out", required=True, help="cache root (proposals.cache_dir of train/test); proposals go to "
                                                      "OUT/<dataset name>-<hash>/<method>-<params hash>/")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (0: compute in this process)")
    parser.add_argument("--eval", action="store_true", help="also evaluate recall against the dataset's ground truth")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--shard", metavar="K/N",
                        help="compute only shard K of N (0 <= K < N: the images i with i %% N == K) into the shared "
                             "cache, e.g. one per cluster job; under torchrun the default is RANK/WORLD_SIZE. "
                             "The shards' proposals equal one run's; the manifest says complete when all are done")
    parser.add_argument("--strict-images", action="store_true",
                        help="an image that cannot be decoded is an error (default: skipped, counted, named)")


def main(args) -> int:
    from detect.config import parse_override
    from detect.data.spec import build_dataset
    from detect.engine.detection_data import without_unreadable
    from detect.evaluation.proposal_recall import format_recall_table, proposal_recall
    from detect.proposals import build_proposer
    from detect.proposals.cache import (dataset_cache_root, ensure_proposals, parse_shard, proposal_path, read_manifest,
                                        read_proposals, shard_indices)
    from detect.report.recall_plot import plot_recall_curves
    from detect.utils.files import atomic_write_bytes

    shard = parse_shard(args.shard) if args.shard else shard_from_environment()
    params = dict(parse_override(item) for item in args.param)
    proposer = build_proposer(args.method, **params)
    dataset = build_dataset(args.data)
    if dataset.skips:
        print(f"dataset: {dataset.skips.summary()}")
    cache_dir = ensure_proposals(dataset, proposer, dataset_cache_root(dataset, args.out), workers=args.workers,
                                 progress=not args.no_progress, strict_images=args.strict_images, shard=shard)
    if shard is None:
        print(f"proposals of {len(dataset)} images in {cache_dir}")
    else:
        done = read_manifest(cache_dir).get("complete", False)
        print(f"shard {shard[0]}/{shard[1]}: proposals of {len(shard_indices(len(dataset), shard))} of "
              f"{len(dataset)} images in {cache_dir}; cache "
              + ("complete" if done else "not complete yet (other shards still missing)"))
        if args.eval and not done:
            print("--eval skipped: the cache is not complete yet (run it again once every shard has finished)")
            return 0
    if not args.eval:
        return 0
    dataset = without_unreadable(dataset, cache_dir)  # images that could not be decoded have no proposals
    result = proposal_recall(
        dataset, lambda i: read_proposals(proposal_path(cache_dir, dataset.records[i].image_id)))
    result.update(method=args.method, params=proposer.params(), data=args.data)
    print(format_recall_table(result))
    text = json.dumps(result, indent=2).encode()
    atomic_write_bytes(cache_dir / "recall.json", lambda fh: fh.write(text))
    plot = plot_recall_curves({args.method: result}, cache_dir / "recall.png", title=args.data)
    print(f"wrote {cache_dir / 'recall.json'} and {plot}")
    return 0


def shard_from_environment() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when torchrun (or a scheduler exporting the same names) started several processes."""
    import os

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None
