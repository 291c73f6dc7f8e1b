"""`in2 synth`: corpus -> segments -> QA pairs -> long contexts -> mixture -> dataset folder.

One shard (`num_shards == 1`) writes the release folder directly. With several shards, each writes
`<output_dir>.shards/shard-i-of-n/` and `merge` joins them into the release folder.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from in2 import redact
from in2 import tokenizer as tokenizers
from in2.config import ConfigError, SynthConfig, from_dict, to_dict
from in2.data import templates
from in2.data.assemble import Assembler, FillerPool, verify
from in2.data.corpus import Text, iter_texts
from in2.data.mixture import counts, general_rows, mix
from in2.data.qa import ROLES, QAGenerator, expected_waves, oversample, planned, reject_rate
from in2.data.segment import Segmenter, Source
from in2.llm import Engine
from in2.release import decontam, folder
from in2.release.decontam import Decontaminator

TEXT_BATCH = 256


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


def prompt_files(cfg: SynthConfig) -> list[str]:
    return [cfg.qa.prompt_fine_grained, cfg.qa.prompt_integration, templates.FILM_CONTEXT, templates.FILM_NO_CONTEXT]


def describe_generator(cfg: SynthConfig, engine: Engine) -> dict:
    g = cfg.generator
    return {
        "backend": g.backend,
        "model": g.model,
        "base_url": redact.url(g.base_url),
        "sampling": engine.sampling,
        "prefill": g.prefill,
    }


def dry_run(cfg: SynthConfig, sample: int = 2000) -> dict:
    """Estimate the run's requests, tokens and cost without sending anything.

    Each wave plans `qa.oversample` (`qa.oversample_integration`) x the missing rows of each part; waves repeat for what rejects
    leave missing, and with `qa.expected_reject_rate` (the reject budget) the expected waves are
    counted. With `generator.prefill` an item costs one request per field (2; 3 for integration),
    each resending the prompt. Prompts are built for a sample of at most `sample` items of the first
    wave (drawn like the real plan); their tokens and fields per item are scaled to every wave.
    """
    tok = tokenizers.load_tokenizer(cfg.tokenizer)
    stats: Counter = Counter()
    engine = Engine(cfg.generator)  # cache lookups only: the backend loads lazily, on a first miss
    gen = QAGenerator(cfg, engine, Assembler(tok, cfg.context, cfg.seed).source_tokens)
    q, g = cfg.qa, cfg.generator
    need = {r: shard_share(getattr(cfg.mixture, r), cfg.shard_index, cfg.num_shards) for r in ROLES}
    waves = {r: expected_waves(n, oversample(q, r), reject_rate(q, r)) for r, n in need.items()}
    first_wave = sum(w[0] for w in waves.values() if w)
    scale = min(1.0, sample / max(1, first_wave))
    sampled_need = {r: math.ceil(n * scale) for r, n in need.items()}
    wave = gen.plan_wave(source_stream(cfg, tok, stats, []), sampled_need)  # offline: no eval data fetched
    convs = [gen.request(it).as_messages() for it in wave]
    counted = (
        tok.apply_chat_template(convs, tokenize=True, add_generation_prompt=True, return_dict=False) if convs else []
    )
    per_role: dict[str, dict] = {}
    for role in ROLES:
        mine = [(it, len(ids)) for it, ids in zip(wave, counted, strict=True) if it.role == role]
        fields = [len(gen.fields(it)) if g.prefill else 1 for it, _ in mine]
        default = (3 if role == "integration" else 2) if g.prefill else 1
        per_role[role] = {
            "requests_per_item": sum(fields) / len(mine) if mine else default,
            "prompt_tokens_per_request": sum(n for _, n in mine) / len(mine) if mine else None,
        }
    mean_prompt = sum(len(ids) for ids in counted) / len(counted) if counted else 0
    requests = prompt_tokens = 0.0
    for role, w in waves.items():
        per = per_role[role]
        n = sum(w) * per["requests_per_item"]
        requests += n
        prompt_tokens += n * (per["prompt_tokens_per_request"] or mean_prompt)
    requests = round(requests)
    out_tokens = requests * g.max_tokens
    sampled = [gen.first_request(it) for it in wave]
    report = {
        "requests": requests,
        "requests_first_wave": round(sum(w[0] * per_role[r]["requests_per_item"] for r, w in waves.items() if w)),
        "expected_waves": max((len(w) for w in waves.values()), default=0),
        "items_per_wave": {r: w for r, w in waves.items() if w},
        "requests_per_item": {r: round(p["requests_per_item"], 3) for r, p in per_role.items()},
        "rows_needed": need,
        "sampled_requests": len(wave),
        "sampled_by_role": dict(Counter(it.role for it in wave)),
        "sampled_already_cached": engine.cached(sampled),
        "prompt_tokens": round(prompt_tokens),
        "completion_tokens_at_most": out_tokens,
        "estimated_cost_usd_at_most": round(
            (prompt_tokens * g.price_input_per_1m + out_tokens * g.price_output_per_1m) / 1e6, 2
        ),
        "texts_read": dict(stats),
        "oversample": {r: oversample(q, r) for r in ROLES},
        "expected_reject_rate": {r: reject_rate(q, r) for r in ROLES},
        "note": "waves expected from qa.expected_reject_rate (the reject budget: set it from a pilot run's "
        "rejected / planned); with generator.prefill one request per field; prompt tokens counted with the target "
        "tokenizer on the sample and scaled; identical requests answered once and decontamination are not counted",
    }
    if len(wave) < sum(planned(n, oversample(q, r)) for r, n in sampled_need.items()):
        report["warning"] = "the corpus ran out before the sample was planned: the run will be short of rows"
    engine.close()
    return report


def synth_shard(cfg: SynthConfig) -> tuple[list[dict], dict]:
    """Build this shard's rows and its manifest."""
    tok = tokenizers.load_tokenizer(cfg.tokenizer)
    stats: Counter = Counter()
    pool: list[Source] = []
    decontaminator = decontam.build(cfg.decontam)
    stream = source_stream(cfg, tok, stats, pool, decontaminator)
    engine = Engine(cfg.generator)
    assembler = Assembler(tok, cfg.context, cfg.seed)
    gen = QAGenerator(cfg, engine, assembler.source_tokens)
    need = {
        r: shard_share(getattr(cfg.mixture, r), cfg.shard_index, cfg.num_shards)
        for r in ("fine_grained", "integration", "short")
    }
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
    rows = qa_rows + general
    manifest = {
        "config": to_dict(cfg),
        "prompts": templates.hashes(prompt_files(cfg)),
        "generator": describe_generator(cfg, engine),
        "tokenizer": tokenizers.describe(cfg.tokenizer),
        "corpus": {"source": cfg.corpus.source, "name": cfg.corpus.name, "split": cfg.corpus.split},
        "counts": {
            "rows": counts(rows),
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
        },
        "rejected": {k.removeprefix("rejected_"): v for k, v in sorted(gen.stats.items()) if k.startswith("rejected_")},
        "usage": engine.usage.to_json(cfg.generator),
        "token_accounting": verify(tok, rows, cfg.context.max_length, cfg.context.verify_rows, cfg.seed),
    }
    engine.close()
    return rows, manifest


def _finalize(cfg: SynthConfig, rows: list[dict], manifest: dict) -> Path:
    splits = mix(rows, cfg.seed, cfg.mixture.validation_rows)
    have = counts(rows)
    requested = {part: getattr(cfg.mixture, part) for part in have}
    manifest = {
        "in2_version": folder.versions().get("in2"),
        **manifest,
        "requested": requested,
        # rows asked for and not built: the corpus or the instruction data ran out, or too many rejects
        "shortfall": {part: requested[part] - n for part, n in have.items() if n < requested[part]},
        "splits": {k: len(v) for k, v in splits.items()},
        "content_hash": folder.content_hash(splits),
        "versions": folder.versions(),
    }
    return folder.write_folder(cfg.output_dir, splits, manifest, cfg.mixture.rows_per_file)


def shards_dir(output_dir: str) -> Path:
    return Path(output_dir + ".shards")


def synth(cfg: SynthConfig) -> Path:
    """Run this config's shard; with one shard, write the release folder."""
    rows, manifest = synth_shard(cfg)
    if cfg.num_shards == 1:
        return _finalize(cfg, rows, manifest)
    out = shards_dir(cfg.output_dir) / f"shard-{cfg.shard_index:05d}-of-{cfg.num_shards:05d}"
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    folder.write_parquet(rows, tmp / "rows.parquet")
    (tmp / "manifest.json").write_text(json.dumps(redact.data(manifest), indent=2, ensure_ascii=False) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            out[k] = _add(out.get(k, {}), v)
        else:
            out[k] = out.get(k, 0) + v
    return out


def merge(output_dir: str) -> Path:
    """Join all shard folders of `<output_dir>.shards/` into the release folder."""
    root = shards_dir(output_dir)
    manifests = sorted(root.glob("shard-*-of-*/manifest.json"))
    if not manifests:
        raise ConfigError(f"no shards found in {root}")
    parts = [json.loads(p.read_text()) for p in manifests]
    n = parts[0]["config"]["num_shards"]
    have = {p["config"]["shard_index"] for p in parts}
    if have != set(range(n)) or any(p["config"]["num_shards"] != n for p in parts):
        missing = sorted(set(range(n)) - have)
        raise ConfigError(f"{root}: shards {missing} of {n} are missing (run them, then merge again)")

    def core(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in ("shard_index",)}

    if any(core(p["config"]) != core(parts[0]["config"]) for p in parts):
        raise ConfigError(f"{root}: shards were built with different configs")
    rows = [r for p in manifests for r in folder.read_parquet(p.parent / "rows.parquet")]
    merged = dict(parts[0])
    merged["config"] = {**parts[0]["config"], "shard_index": None}
    for key in ("counts", "rejected", "usage"):
        total: dict = {}
        for p in parts:
            total = _add(total, {k: v for k, v in p[key].items() if not isinstance(v, str)})
        merged[key] = total
    merged["counts"]["rows"] = counts(rows)
    acc = [p["token_accounting"] for p in parts]
    merged["token_accounting"] = {
        "rows_checked": sum(a["rows_checked"] for a in acc),
        "max_abs_error_tokens": max(a["max_abs_error_tokens"] for a in acc),
    }
    cfg = from_dict(SynthConfig, {**parts[0]["config"], "shard_index": 0})
    cfg.output_dir = output_dir
    return _finalize(cfg, rows, merged)


__all__ = ["dry_run", "merge", "synth"]
