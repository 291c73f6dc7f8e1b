"""`in2 synth`: corpus -> segments -> QA pairs -> long contexts -> mixture -> dataset folder.

Every shard writes `<output_dir>.shards/shard-i-of-n/` (its rows in release order and its
manifest, swapped in whole when done). One shard (`num_shards == 1`) then writes the release folder
from it and removes it; with several, `merge` joins them. Rows are streamed, never all in memory.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from in2 import __version__, prompts, redact
from in2 import tokenizer as tokenizers
from in2.errors import ConfigError
from in2.llm import Engine
from in2.llm.cache import one_run
from in2.llm.ledger import Ledger
from in2.measured import REPLY_TOKENS
from in2.recipes import from_dict, to_dict
from in2.synth import dataset, decontam
from in2.synth.assemble import Assembler, FillerPool, Sample, verify
from in2.synth.config import QA_PARTS, SynthConfig, data_settings
from in2.synth.corpus import Text, iter_texts
from in2.synth.decontam import Decontaminator
from in2.synth.mixture import counts, general_rows
from in2.synth.qa import QAGenerator, expected_waves, oversample, planned, reject_rate
from in2.synth.segment import Segmenter, Source
from in2.versions import versions

TEXT_BATCH = 256
ROWS_FILE = "rows.parquet"


def shard_share(total: int, shard_index: int, num_shards: int) -> int:
    return total // num_shards + (shard_index < total % num_shards)


def clean_texts(texts: Iterator[Text], decontaminator: Decontaminator | None, stats: Counter) -> Iterator[Text]:
    """Texts that share no n-gram with evaluation data (all texts without a decontaminator)."""
    for t in texts:
        if decontaminator is not None and decontaminator.contaminated(t.text):
            stats["skipped_contaminated"] += 1
            continue
        yield t


def source_stream(
    cfg: SynthConfig, tok, stats: Counter, pool: list[Source], decontaminator: Decontaminator | None = None
) -> Iterator[Source]:
    """Segmented, decontaminated texts of this shard, read lazily in batches; each also kept in `pool`."""
    segmenter = Segmenter(tok, cfg.corpus.min_segment_tokens, cfg.corpus.max_segment_tokens)
    texts = clean_texts(iter_texts(cfg.corpus, cfg.shard_index, cfg.num_shards, stats), decontaminator, stats)
    with tqdm(desc="segmenting texts", unit="text") as bar:
        while batch := list(itertools.islice(texts, TEXT_BATCH)):
            bar.update(len(batch))
            for src in segmenter(batch, stats):
                pool.append(src)
                yield src


def job_engine(cfg: SynthConfig) -> Engine:
    """The engine of this shard, its spend counted for the whole job (generator.max_cost_usd): in its cache
    under the job's output_dir, and with several shards published to `<output_dir>.spend/` for the
    others."""
    ledger = None
    if cfg.num_shards > 1:
        ledger = Ledger(Path(cfg.output_dir + ".spend"), shard_name(cfg.shard_index, cfg.num_shards))
    return Engine(cfg.generator, job=f"in2 synth {cfg.output_dir}", ledger=ledger)


def qa_generator(cfg: SynthConfig, engine: Engine, assembler: Assembler) -> QAGenerator:
    return QAGenerator(
        cfg.qa, cfg.context, cfg.mixture, cfg.seed, engine, assembler.source_tokens, prefill=cfg.generator.prefill
    )


def prompt_files(cfg: SynthConfig) -> list[str]:
    return [cfg.qa.prompt_fine_grained, cfg.qa.prompt_integration, prompts.FILM_CONTEXT, prompts.FILM_NO_CONTEXT]


def describe_generator(cfg: SynthConfig, engine: Engine) -> dict:
    g = cfg.generator
    return {
        "backend": g.backend,
        "model": g.model,
        "base_url": redact.url(g.base_url),
        "sampling": engine.sampling,
        "prefill": g.prefill,
        "model_id": engine.model_id,
    }


def read_pilot(path: str) -> dict:
    """What a small real run measured, from its manifest.json (or release folder): completion tokens per
    answer and each part's share of rejected replies."""
    file = Path(path) / "manifest.json" if Path(path).is_dir() else Path(path)
    try:
        m = json.loads(file.read_text())
        usage, qa = m["usage"], m["counts"]["qa"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--pilot {path}: not the manifest.json of an `in2 synth` run ({e})") from None
    answers = usage["requests_sent"] + usage["requests_cached"]
    if not answers or not qa.get("planned"):
        raise ConfigError(f"--pilot {path}: the run answered no request, so it measured nothing")
    rates = {}
    for part, c in m.get("qa_by_part", {}).items():
        if c.get("planned"):
            rates[part] = sum(c["rejected"].values()) / c["planned"]
    overall = sum(m.get("rejected", {}).values()) / qa["planned"]
    return {
        "path": str(file),
        "reply_tokens": usage["completion_tokens"] / answers,
        "answers": answers,
        "reject_rate": {p: rates.get(p, overall) for p in QA_PARTS},
    }


def dry_run(cfg: SynthConfig, sample: int = 2000, pilot: str | None = None) -> dict:
    """Estimate the run's requests, tokens and cost without sending anything.

    Each wave plans `qa.oversample` (`qa.oversample_integration`) x the missing rows of each part; waves repeat for what rejects
    leave missing, and with `qa.expected_reject_rate` (the reject budget) the expected waves are
    counted. With `generator.prefill` an item costs one request per field (2; 3 for integration),
    each resending the prompt. Prompts are built for a sample of at most `sample` items of the first
    wave (drawn like the real plan); their tokens and fields per item are scaled to every wave.

    The bound prices every reply at max_tokens; the realistic figure at the reply length a `pilot` run's
    manifest measured (its reject rates per part then replace qa.expected_reject_rate*), else at
    in2.measured.REPLY_TOKENS (an estimate). Hours follow generator.requests_per_minute / tokens_per_minute;
    the batch figures the Batch API's price (generator.batch_price_factor) and its files of
    generator.batch_max_requests / batch_max_mb, one round of batches per wave and prefill field.
    """
    from in2.llm.batch_backend import LINE_OVERHEAD, body

    measured = read_pilot(pilot) if pilot else None
    tok = tokenizers.load_tokenizer(cfg.tokenizer)
    stats: Counter = Counter()
    engine = Engine(cfg.generator)  # cache lookups only: the backend loads lazily, on a first miss
    gen = qa_generator(cfg, engine, Assembler(tok, cfg.context, cfg.seed))
    q, g = cfg.qa, cfg.generator
    need = {p: shard_share(getattr(cfg.mixture, p), cfg.shard_index, cfg.num_shards) for p in QA_PARTS}
    rates = measured["reject_rate"] if measured else {p: reject_rate(q, p) for p in QA_PARTS}
    waves = {p: expected_waves(n, oversample(q, p), rates[p]) for p, n in need.items()}
    first_wave = sum(w[0] for w in waves.values() if w)
    scale = min(1.0, sample / max(1, first_wave))
    sampled_need = {p: math.ceil(n * scale) for p, n in need.items()}
    wave = gen.plan_wave(source_stream(cfg, tok, stats, []), sampled_need)  # offline: no eval data fetched
    convs = [gen.request(it).as_messages() for it in wave]
    counted = (
        tok.apply_chat_template(convs, tokenize=True, add_generation_prompt=True, return_dict=False) if convs else []
    )
    per_part: dict[str, dict] = {}
    for part in QA_PARTS:
        mine = [(it, len(ids)) for it, ids in zip(wave, counted, strict=True) if it.part == part]
        fields = [len(gen.fields(it)) if g.prefill else 1 for it, _ in mine]
        default = (3 if part == "integration" else 2) if g.prefill else 1
        per_part[part] = {
            "requests_per_item": sum(fields) / len(mine) if mine else default,
            "prompt_tokens_per_request": sum(n for _, n in mine) / len(mine) if mine else None,
        }
    mean_prompt = sum(len(ids) for ids in counted) / len(counted) if counted else 0
    requests = prompt_tokens = 0.0
    for part, w in waves.items():
        per = per_part[part]
        n = sum(w) * per["requests_per_item"]
        requests += n
        prompt_tokens += n * (per["prompt_tokens_per_request"] or mean_prompt)
    requests = round(requests)
    out_tokens = requests * g.max_tokens
    sampled = [gen.first_request(it) for it in wave]
    reply = measured["reply_tokens"] if measured else REPLY_TOKENS.value
    realistic = requests * reply
    price = (prompt_tokens * g.price_input_per_1m + realistic * g.price_output_per_1m) / 1e6  # synchronous
    hours = [requests / g.requests_per_minute / 60] if g.requests_per_minute else []
    if g.tokens_per_minute:
        hours.append((prompt_tokens + realistic) / g.tokens_per_minute / 60)
    line_bytes = (
        sum(len(json.dumps(body(r, engine.sampling, g.model), ensure_ascii=False).encode()) for r in sampled)
        / len(sampled)
        + LINE_OVERHEAD
        if sampled
        else 0
    )
    batches = batch_waves = 0  # one round of batch files per wave and (with prefill) field
    steps = math.ceil(max((per["requests_per_item"] for per in per_part.values()), default=1))
    for k in range(max(map(len, waves.values()), default=0)):
        for step in range(steps):
            n = sum(
                w[k] * min(1.0, max(0.0, per_part[p]["requests_per_item"] - step))
                for p, w in waves.items()
                if k < len(w)
            )
            if n >= 1:
                batch_waves += 1
                by_size = math.ceil(n * line_bytes / (g.batch_max_mb * 1e6))
                batches += max(math.ceil(n / g.batch_max_requests), by_size)
    report = {
        "requests": requests,
        "requests_first_wave": round(sum(w[0] * per_part[p]["requests_per_item"] for p, w in waves.items() if w)),
        "expected_waves": max((len(w) for w in waves.values()), default=0),
        "items_per_wave": {p: w for p, w in waves.items() if w},
        "requests_per_item": {p: round(per["requests_per_item"], 3) for p, per in per_part.items()},
        "rows_needed": need,
        "sampled_requests": len(wave),
        "sampled_by_part": dict(Counter(it.part for it in wave)),
        "sampled_already_cached": engine.cached(sampled),
        "prompt_tokens": round(prompt_tokens),
        "completion_tokens_at_most": out_tokens,
        "estimated_cost_usd_at_most": round(
            (prompt_tokens * g.price_input_per_1m + out_tokens * g.price_output_per_1m) / 1e6, 2
        ),
        "reply_tokens": {
            "value": round(reply, 1),
            "source": f"measured: {measured['answers']:,} answers of the pilot run {measured['path']}"
            if measured
            else f"estimate: {REPLY_TOKENS.source}",
        },
        "completion_tokens_realistic": round(realistic),
        "estimated_cost_usd_realistic": round(price, 2),
        "expected_rejects": {p: round(sum(w) * rates[p]) for p, w in waves.items() if w},
        "hours_under_rate_limits": round(max(hours), 2) if hours else None,
        "batch": {
            "price_factor": g.batch_price_factor,
            "estimated_cost_usd_realistic": round(price * g.batch_price_factor, 2),
            "estimated_cost_usd_at_most": round(
                g.batch_price_factor
                * (prompt_tokens * g.price_input_per_1m + out_tokens * g.price_output_per_1m)
                / 1e6,
                2,
            ),
            "batches": batches,
            "waves": batch_waves,
            "bytes_per_request": round(line_bytes),
        },
        "texts_read": dict(stats),
        "oversample": {p: oversample(q, p) for p in QA_PARTS},
        "expected_reject_rate": rates,
        "reject_rate_source": f"pilot run {measured['path']}" if measured else "qa.expected_reject_rate",
        "note": "waves expected from the reject rates (qa.expected_reject_rate, the reject budget, or a pilot run's "
        "rejected / planned per part with --pilot); with generator.prefill one request per field; prompt tokens "
        "counted with the target tokenizer on the sample and scaled; identical requests answered once and "
        "decontamination are not counted; hours: generator.requests_per_minute / tokens_per_minute (null: neither "
        "set); batch: one round of batch files per wave and prefill field, files split at batch_max_requests and "
        "batch_max_mb",
    }
    if len(wave) < sum(planned(n, oversample(q, p)) for p, n in sampled_need.items()):
        report["warning"] = "the corpus ran out before the sample was planned: the run will be short of rows"
    engine.close()
    return report


def by_part(c: Counter) -> dict:
    """One part's items planned and rejected (by reason), as the manifest's `qa_by_part` holds them."""
    rejected = {k.removeprefix("rejected_"): v for k, v in sorted(c.items()) if k.startswith("rejected_")}
    return {"planned": c["planned"], "rejected": rejected}


def synth_shard(cfg: SynthConfig, rows_path: Path) -> dict:
    """Build this shard's rows into `rows_path` (in release order, as they are assembled); returns
    its manifest."""
    tok = tokenizers.load_tokenizer(cfg.tokenizer)
    stats: Counter = Counter()
    pool: list[Source] = []
    decontaminator = decontam.build(cfg.decontam, pins=Path(cfg.output_dir + ".revisions"))
    stream = source_stream(cfg, tok, stats, pool, decontaminator)
    engine = job_engine(cfg)
    assembler = Assembler(tok, cfg.context, cfg.seed)
    gen = qa_generator(cfg, engine, assembler)
    need = {p: shard_share(getattr(cfg.mixture, p), cfg.shard_index, cfg.num_shards) for p in QA_PARTS}
    accepted = gen.run(stream, need)
    while len(pool) < cfg.corpus.filler_pool_texts and next(stream, None) is not None:
        pass
    fillers = FillerPool(pool)
    if len(fillers) == 0 and (accepted["fine_grained"] or accepted["integration"]):
        raise ConfigError("corpus: no filler segments were read (check corpus.source and corpus.max_texts)")
    qa_rows = assembler.rows(accepted["fine_grained"] + accepted["integration"] + accepted["short"], fillers)
    general_stats: Counter = Counter()
    general = general_rows(
        cfg.general,
        shard_share(cfg.mixture.general, cfg.shard_index, cfg.num_shards),
        tok,
        cfg.context.max_length,
        cfg.seed,
        cfg.shard_index,
        cfg.num_shards,
        general_stats,
    )
    sink = dataset.SortedRows(rows_path, cfg.seed, int(cfg.mixture.sort_buffer_mb * 1e6))
    checked = Sample(cfg.context.verify_rows, cfg.seed)
    for row in tqdm(itertools.chain(qa_rows, general), desc="assembling rows", unit="row"):
        sink.add(row)
        checked.add(row)
    parts = sink.close()
    manifest = {
        "in2_version": __version__,
        "config": to_dict(cfg),
        "prompts": prompts.hashes(prompt_files(cfg)),
        "generator": describe_generator(cfg, engine),
        "tokenizer": {**tokenizers.describe(cfg.tokenizer), "sha256": tokenizers.fingerprint(tok)},
        "corpus": {"source": cfg.corpus.source, "name": cfg.corpus.name, "split": cfg.corpus.split},
        "counts": {
            "rows": counts(parts),
            "corpus": dict(stats),
            "filler_pool_segments": len(fillers),
            "qa": {k: v for k, v in gen.stats.items() if not k.startswith("rejected_")},
            "assembly": dict(assembler.stats),
            "general": dict(general_stats),
        },
        # Per-job facts (the same in every shard): merge copies them; texts dropped are in counts.corpus.
        "decontamination": {
            "ngram": cfg.decontam.ngram,
            "eval_sources": [e.source for e in cfg.decontam.sources],
            **(dict(decontaminator.stats) if decontaminator else {}),
            **({"revisions": decontaminator.revisions} if decontaminator and decontaminator.revisions else {}),
        },
        "rejected": {k.removeprefix("rejected_"): v for k, v in sorted(gen.stats.items()) if k.startswith("rejected_")},
        "qa_by_part": {part: by_part(c) for part, c in sorted(gen.by_part.items())},
        # spent_usd_all_runs: this shard's every run, killed ones too (merge sums it over the shards)
        "usage": {**engine.usage.to_json(cfg.generator), "spent_usd_all_runs": round(engine.spent()["own_usd"], 4)},
        "token_accounting": verify(tok, checked.rows, cfg.context.max_length, cfg.context.verify_rows, cfg.seed),
    }
    engine.close()
    return manifest


def _finalize(cfg: SynthConfig, shards: list[Path], manifest: dict) -> Path:
    """Write the release folder from complete shard folders (their rows already in release order)."""
    have = manifest["counts"]["rows"]
    requested = {part: getattr(cfg.mixture, part) for part in have}
    manifest = {
        "in2_version": __version__,
        **manifest,
        "requested": requested,
        # rows asked for and not built: the corpus or the instruction data ran out, or too many rejects
        "shortfall": {part: requested[part] - n for part, n in have.items() if n < requested[part]},
        "splits": None,  # filled by write_folder, with the content hash
        "content_hash": None,
        "versions": versions(dataset.PACKAGES),
    }
    rows = dataset.in_release_order([s / ROWS_FILE for s in shards], cfg.seed)
    return dataset.write_folder(cfg.output_dir, rows, sum(have.values()), manifest, cfg.mixture)


def shards_dir(output_dir: str) -> Path:
    return Path(output_dir + ".shards")


def shard_name(shard_index: int, num_shards: int) -> str:
    return f"shard-{shard_index:05d}-of-{num_shards:05d}"


SHARD_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})(\.tmp)?")


def synth(cfg: SynthConfig) -> Path:
    """Run this config's shard; with one shard, write the release folder. One run at a time per answer cache."""
    with one_run(cfg.generator.cache_dir, f"in2 synth (shard {cfg.shard_index} of {cfg.num_shards})"):
        return _synth(cfg)


def _synth(cfg: SynthConfig) -> Path:
    import pyarrow.parquet as pq

    out = shards_dir(cfg.output_dir) / shard_name(cfg.shard_index, cfg.num_shards)
    tmp = out.with_name(out.name + ".tmp")  # a shard killed on the way leaves only this
    if tmp.exists():
        shutil.rmtree(tmp)
    manifest = synth_shard(cfg, tmp / ROWS_FILE)
    rows_file = tmp / ROWS_FILE
    manifest["rows_file"] = {"rows": pq.ParquetFile(rows_file).metadata.num_rows, "bytes": rows_file.stat().st_size}
    (tmp / "manifest.json").write_text(json.dumps(redact.data(manifest), indent=2, ensure_ascii=False) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    if cfg.num_shards > 1:
        return out
    del manifest["rows_file"]
    release = _finalize(cfg, [out], manifest)
    shutil.rmtree(out)
    if not any(out.parent.iterdir()):
        out.parent.rmdir()
    return release


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            out[k] = _add(out.get(k, {}), v)
        else:
            out[k] = out.get(k, 0) + v
    return out


def check_shard(path: Path) -> dict:
    """A complete shard folder's manifest; ConfigError naming the folder if it is incomplete."""
    import pyarrow.parquet as pq

    def incomplete(why: str) -> ConfigError:
        return ConfigError(f"shard folder {path} is incomplete ({why}): rerun that shard, then merge again")

    try:
        manifest = json.loads((path / "manifest.json").read_text())
        expected = manifest["rows_file"]
    except FileNotFoundError:
        raise incomplete("no manifest.json") from None
    except (ValueError, KeyError):
        raise incomplete("manifest.json is cut short, or written by an in2 older than the streaming merge") from None
    rows = path / ROWS_FILE
    if not rows.is_file():
        raise incomplete(f"no {ROWS_FILE}")
    if rows.stat().st_size != expected["bytes"]:
        raise incomplete(f"{ROWS_FILE} has {rows.stat().st_size} bytes, its manifest says {expected['bytes']}")
    try:
        n = pq.ParquetFile(rows).metadata.num_rows
    except (OSError, ValueError) as e:  # pyarrow's errors for a damaged footer derive from these
        raise incomplete(f"{ROWS_FILE} cannot be read: {e}") from None
    if n != expected["rows"] or n != sum(manifest["counts"]["rows"].values()):
        raise incomplete(f"{ROWS_FILE} has {n} rows, its manifest says {expected['rows']}")
    return manifest


def data_facts(manifest: dict) -> dict[str, object]:
    """What a shard's rows depend on: its data settings (config less RUNTIME_FIELDS), the prompt files'
    hashes, the tokenizer as loaded, what answered and the in2 version."""
    facts: dict[str, object] = dict(data_settings(manifest["config"]))
    facts.update({f"prompt file {name} (sha256)": h for name, h in manifest.get("prompts", {}).items()})
    facts["tokenizer as loaded (sha256)"] = manifest.get("tokenizer", {}).get("sha256")
    facts["the generator's model (its cache key)"] = manifest.get("generator", {}).get("model_id")
    facts["in2 version"] = manifest.get("in2_version")
    revisions = manifest.get("decontamination", {}).get("revisions", {})
    facts.update({f"evaluation data {source} (Hub commit)": commit for source, commit in revisions.items()})
    return facts


def same_data(shards: list[Path], parts: list[dict]) -> None:
    """ConfigError naming the first fact that differs between shard 0 and another shard; runtime fields
    (generator.cache_dir, concurrency, max_cost_usd, ...) may differ."""
    ref = data_facts(parts[0])
    for path, part in zip(shards[1:], parts[1:], strict=True):
        mine = data_facts(part)
        for name in sorted(set(ref) | set(mine)):
            if ref.get(name) != mine.get(name):
                raise ConfigError(
                    f"{path} was built with {name} = {mine.get(name)!r} but {shards[0].name} with "
                    f"{ref.get(name)!r}: the shards of one job must share every setting that shapes the rows; "
                    "rerun the odd shard with the job's settings, then merge again"
                )


def merge(output_dir: str) -> Path:
    """Join all shard folders of `<output_dir>.shards/` into the release folder, streaming their rows.
    A killed merge leaves the release as it was; run it again."""
    root = shards_dir(output_dir)
    found = [m for p in root.glob("shard-*") if (m := SHARD_NAME.fullmatch(p.name))]
    if not found:
        raise ConfigError(f"no shards found in {root}")
    runs = sorted({int(m.group(2)) for m in found})
    if len(runs) > 1:
        raise ConfigError(f"{root} holds shards of runs with {runs} shards: remove the stale ones, then merge again")
    n = runs[0]
    have = {int(m.group(1)) for m in found}
    missing = sorted(set(range(n)) - have)
    if missing:
        raise ConfigError(f"{root}: shards {missing} of {n} are missing (run them, then merge again)")
    for m in sorted(found, key=lambda m: m.group(0)):
        if m.group(3) and not (root / shard_name(int(m.group(1)), n)).is_dir():
            raise ConfigError(
                f"shard folder {root / m.group(0)} is incomplete (killed or still running): rerun that shard, "
                "then merge again"
            )
    shards = [root / shard_name(i, n) for i in range(n)]
    parts = [check_shard(s) for s in shards]

    same_data(shards, parts)
    merged = {k: v for k, v in parts[0].items() if k != "rows_file"}
    merged["config"] = {**parts[0]["config"], "shard_index": None}
    for key in ("counts", "rejected", "qa_by_part", "usage"):
        total: dict = {}
        for p in parts:
            total = _add(total, {k: v for k, v in p.get(key, {}).items() if not isinstance(v, str)})
        merged[key] = total
    acc = [p["token_accounting"] for p in parts]
    merged["token_accounting"] = {
        "rows_checked": sum(a["rows_checked"] for a in acc),
        "max_abs_error_tokens": max(a["max_abs_error_tokens"] for a in acc),
    }
    cfg = from_dict(SynthConfig, {**parts[0]["config"], "shard_index": 0})
    cfg.output_dir = output_dir
    return _finalize(cfg, shards, merged)


__all__ = ["dry_run", "merge", "synth"]
