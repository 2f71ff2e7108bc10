"""The README's first command: build the default repository, index Tatoeba, serve, and query it.

Sentences go in and queries go out over the real REST API of a real server, so the demo exercises
exactly what users will call (and shows the commands to do it themselves).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export.corpus import DEMO_LANGS, available_langs, demo_corpus, load_tatoeba_pairs, write_sample
from export.default_repo import build_default_repository
from service.config import Settings
from service.server import serve_in_thread

# (language of the query, index of a Tatoeba pair, target languages): the query is the xx side of the
# pair (or its English side for "eng"), so the gold translation is known and marked in the output.
DEMO_QUERIES = [("deu", 7, ["eng"]), ("jpn", 7, ["eng"]), ("rus", 11, ["eng"]), ("eng", 3, ["fra", "spa"])]


def post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST JSON with the standard library (the demo needs no HTTP client package)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def show(rest: str, text: str, target: list[str] | None, gold: set[tuple[str, str]]) -> None:
    """Run one query over REST and print its top hits; the known translation is marked with *."""
    payload: dict[str, Any] = {"queries": [text], "k": 3}
    if target:
        payload["langs"] = target
    answer = post(f"{rest}/search", payload)
    where = f"  (searching only {','.join(target)})" if target else ""
    print(f"\n  query: {text}{where}")
    for hit in answer["results"][0]["hits"]:
        mark = "*" if (hit["lang"], hit["text"]) in gold else " "
        print(f"   {mark} {hit['score']:.3f}  [{hit['lang']}] {hit['text']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export demo", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path("artifacts/repo"), help="model repository to build/use")
    parser.add_argument("--index", type=Path, default=Path("artifacts/demo-index"), help="index folder (rebuilt)")
    parser.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"), help="converted checkpoints")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="shared data folder")
    parser.add_argument("--langs", default=",".join(DEMO_LANGS), help="Tatoeba languages (ISO 639-3) to index")
    parser.add_argument("--all-languages", action="store_true", help="index all 112 Tatoeba languages")
    parser.add_argument("--per-lang", type=int, default=150, help="translation pairs per language")
    parser.add_argument("--query", action="append", default=[], help="extra query to run (repeatable)")
    parser.add_argument("--serve", action="store_true", help="keep serving after the demo queries (Ctrl-C stops)")
    parser.add_argument("--port", type=int, default=8000, help="REST port")
    parser.add_argument("--grpc-port", type=int, default=50051, help="gRPC port")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    print("[1/4] model repository", flush=True)
    build_default_repository(args.repo, args.cache_dir)

    print("[2/4] corpus", flush=True)
    tatoeba = args.data_dir / "tatoeba"
    if not (tatoeba / "v1").is_dir():
        tatoeba = write_sample(Path("artifacts/sample-tatoeba"))
        print(f"  {args.data_dir / 'tatoeba'} not found: using the built-in sample written to {tatoeba}")
    langs = available_langs(tatoeba) if args.all_languages else [x for x in args.langs.split(",") if x]
    langs = [lang for lang in langs if lang in set(available_langs(tatoeba))] or available_langs(tatoeba)
    corpus = demo_corpus(tatoeba, langs, args.per_lang)
    print(f"  {len(corpus)} sentences in {len({s.lang for s in corpus})} languages from {tatoeba}")

    print("[3/4] start the service and index the corpus over REST", flush=True)
    shutil.rmtree(args.index, ignore_errors=True)
    settings = Settings(repo=args.repo, index=args.index, port=args.port, grpc_port=args.grpc_port)
    with serve_in_thread(settings) as svc:
        print(f"  serving REST {svc.rest}  gRPC {svc.grpc}")
        batch = 64
        with tqdm(total=len(corpus), unit="sent", desc="  indexing") as bar:
            for start in range(0, len(corpus), batch):
                chunk = corpus[start : start + batch]
                post(f"{svc.rest}/sentences", {"sentences": [vars(s) for s in chunk]})
                bar.update(len(chunk))

        print("[4/4] cross-lingual queries (* marks the gold Tatoeba translation)", flush=True)
        by_id = {c.id: c for c in corpus}
        for lang, i, target in DEMO_QUERIES:
            pair_lang = lang if lang != "eng" else target[0]
            query_id = f"tatoeba:{pair_lang}-eng:{lang}:{i}"
            if query_id not in by_id:  # the built-in sample has fewer pairs
                continue
            xx, en = load_tatoeba_pairs(tatoeba, pair_lang, i + 1)
            gold = {(pair_lang, xx[i].strip()), ("eng", en[i].strip())} - {(lang, by_id[query_id].text)}
            show(svc.rest, by_id[query_id].text, target, gold)
        for text in args.query:
            show(svc.rest, text, None, set())
        print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s.")
        print(
            f"Try it yourself:\n  curl -s {svc.rest}/search -H 'Content-Type: application/json' "
            '-d \'{"queries": ["Wo ist die Bibliothek?"], "k": 3, "langs": ["eng"]}\''
        )
        if args.serve:
            print("serving until Ctrl-C ...", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        else:
            print(f"To serve this index: python -m service serve --repo {args.repo} --index {args.index}")
    return 0
