"""Every task the evaluation knows, listed once: the suites, VaL probing's three tasks (the FILM paper's
Section 3, arXiv 2404.16811) and LongBench's nine English tasks (the paper's real-world long-context tasks)."""

SUITES = ("probing", "longbench", "ruler", "short")
"""What `in2 eval` can run (EvalConfig.suites)."""

PROBE_TASKS = ("document", "code", "database")
"""VaL probing's tasks, in the order of the paper's tables: document sentence retrieval (bi-directional),
code function retrieval (backward), database entity retrieval (forward)."""

PROBE_SEPARATORS = {"document": " ", "code": "\n", "database": "\n"}
"""Between the items of a probe context, per task (the paper does not say; ProbeConfig.separators)."""

LONGBENCH_TASKS = {
    "narrativeqa": ("qa_f1", 128),
    "qasper": ("qa_f1", 128),
    "multifieldqa_en": ("qa_f1", 64),
    "hotpotqa": ("qa_f1", 32),
    "2wikimqa": ("qa_f1", 32),
    "musique": ("qa_f1", 32),
    "gov_report": ("rouge_l", 512),
    "qmsum": ("rouge_l", 512),
    "multi_news": ("rouge_l", 512),
}
"""task -> (metric, max new tokens): LongBench's config/dataset2maxlen.json, as the paper uses them."""

RULER_TASKS = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multiquery",
    "niah_multivalue",
    "ruler_vt",
    "ruler_cwe",
    "ruler_fwe",
    "ruler_qa_squad",
    "ruler_qa_hotpot",
)
"""RULER's 13 tasks, as lm-evaluation-harness 0.4.13 names them (its `ruler` group)."""

RULER_OFFLINE = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")
"""RULER tasks generated without a download: noise haystacks (repeated sentences, needles), variable
tracking, common and frequent word extraction."""

RULER_PART = ("ruler_qa_squad", "ruler_qa_hotpot")
"""RULER tasks scored by the best single expected answer (`string_match_part`); the rest by all of them."""

RULER_LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
"""The lengths lm-eval's ruler tasks report (their metric names), RULER's own series."""
