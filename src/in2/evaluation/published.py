"""The paper's published numbers (the FILM paper's Sections 3 and 4, arXiv 2404.16811), shown beside ours for reference."""

PROBING_32K = {  # Avg / Gap per task and All, VaLProbing-32K
    "Mistral-7B-Instruct-v0.2": {
        "document": (74.2, 32.1),
        "code": (20.3, 59.5),
        "database": (47.5, 77.0),
        "all": (47.3, 56.2),
    },
    "GPT-4-Turbo": {"document": (81.3, 31.7), "code": (66.1, 46.5), "database": (89.6, 18.0), "all": (79.0, 32.1)},
    "FILM-7B": {"document": (85.4, 6.1), "code": (83.3, 18.7), "database": (89.0, 16.8), "all": (85.9, 13.9)},
}
LONGBENCH = {  # per task in in2.evaluation.tasks.LONGBENCH_TASKS order, then the average
    "Mistral-7B-Instruct-v0.2": [23.5, 33.8, 45.9, 42.4, 24.3, 20.8, 33.3, 24.8, 26.8, 30.6],
    "FILM-7B": [26.9, 42.2, 56.0, 62.1, 47.0, 39.0, 33.8, 25.1, 26.9, 39.9],
}
SHORT = {  # lm-evaluation-harness style; keys are lm-eval task names
    "Mistral-7B-Instruct-v0.2": {
        "mmlu": 59.3,
        "boolq": 85.4,
        "race": 46.0,
        "commonsense_qa": 70.0,
        "arc_challenge": 55.9,
        "hellaswag": 83.6,
        "gsm8k": 40.4,
        "minerva_math": 8.7,
    },
    "FILM-7B": {
        "mmlu": 59.2,
        "boolq": 87.7,
        "race": 45.6,
        "commonsense_qa": 75.3,
        "arc_challenge": 52.5,
        "hellaswag": 79.1,
        "gsm8k": 44.5,
        "minerva_math": 11.3,
    },
}
RULER = {  # RULER's published results (github.com/NVIDIA/RULER): score per length, average over 4K-128K, effective length
    "FILM-7B": {"32768": 86.9, "65536": 70.1, "131072": 27.1, "average": 75.5, "effective": 32768},
    "Mistral-7B-Instruct-v0.2": {"32768": 75.4, "average": 68.4, "effective": 16384},  # 75.4 also in the FILM paper
    "Mistral-Nemo-Instruct-2407": {"131072": 19.0, "effective": 16384},
}
"""Only the figures in2 has from a source; a blank cell is a figure not given here, not a zero."""
