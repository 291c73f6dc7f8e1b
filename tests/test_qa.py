import pytest

from in2.synth.qa import QA, check, expected_waves, grounding, join, parse

SRC = "The harbour bridge opened in 1932 and carries eight lanes of traffic across the bay."


def test_parse_accepts_the_exact_format():
    qa, reason = parse("Question: When did the harbour bridge open?\nAnswer: It opened in 1932.", "fine_grained", 1)
    assert reason is None and qa == QA("When did the harbour bridge open?", "It opened in 1932.")
    qa, reason = parse("Question: q?\nAnswer: a\nPieces: 1, 3", "integration", 3)
    assert reason is None and qa.answer == "a"
    qa, reason = parse("Question: q?\nAnswer: a\nPieces: [Piece 1], [Piece 3]", "integration", 3)  # the labels
    assert reason is None and qa.answer == "a"


@pytest.mark.parametrize(
    "text, qa_type, reason",
    [
        ("Sure! Here is a question.", "fine_grained", "unparseable"),
        ("Question: What opened?", "fine_grained", "no_answer"),
        ("Question: What opened?\nThe bridge.", "fine_grained", "unparseable"),
        ("Question: What opened? Answer: x\nAnswer: the bridge", "fine_grained", "unparseable"),
        ("Question: What opened?\nAnswer: the bridge\nI hope this helps!", "fine_grained", "extra_text"),
        ("Question: \nAnswer: the bridge", "fine_grained", "empty"),
        ("Question: q?\nAnswer: a", "integration", "no_pieces"),
        ("Question: q?\nAnswer: a\nPieces: 2", "integration", "fewer_than_two_pieces"),
        ("Question: q?\nAnswer: a\nPieces: 2, 9", "integration", "fewer_than_two_pieces"),  # 9 does not exist
    ],
)
def test_parse_rejections(text, qa_type, reason):
    qa, why = parse(text, qa_type, 3)
    assert qa is None and why == reason


@pytest.mark.parametrize(
    "question, answer, reason",
    [
        ("According to the context, when did the bridge open?", "In 1932.", "context_reference"),
        ("What does the passage say about the bridge?", "It opened in 1932.", "context_reference"),
        ("In piece 2, what opened?", "The bridge, in 1932.", "context_reference"),
        ("Which bridge is named by the passage?", "The harbour bridge.", "context_reference"),
        ("What is the answer to this question: when did the bridge open?", "In 1932.", "context_reference"),
        ("When did the bridge open?", "I'm sorry, I cannot answer that.", "refusal"),
        ("When did the bridge open?", "Dolphins migrate south every winter.", "ungrounded"),
        ("When did the harbour bridge open?", "The bridge first opened in 1932.", None),
        # answers that do not answer: a question back, a how-to heading, the question restated
        ("When did the harbour bridge open?", "When did the bridge open to traffic?", "question_shaped_answer"),
        ("When did the bridge open?", "Which year? It was 1932.", "question_shaped_answer"),
        ("How to cross the harbour bridge?", "How to cross the harbour bridge.", "question_shaped_answer"),
        (
            "What does the harbour bridge carry?",
            "What does the bridge carry: lanes.",
            "answer_restates_question",
        ),
        ("How many lanes does the bridge carry?", "The bridge does carry lanes.", "answer_restates_question"),
        ("Did the bridge open in 1932 or in 1933?", "In 1932.", None),  # a pick among the options
        ("Does the bridge carry eight lanes?", "Yes, eight lanes.", None),  # "yes" is new: an answer
        ("How many lanes does the bridge carry?", "Eight lanes of traffic.", None),
        ("What is the capital of France?", "It opened in 1932.", "off_topic_question"),
    ],
)
def test_content_checks(question, answer, reason):
    assert check(QA(question, answer), SRC, 0.5) == reason


def test_grounding_ignores_stopwords():
    assert grounding("It was the bridge", SRC) == 1.0
    assert grounding("purple elephants bridge", SRC) == pytest.approx(1 / 3)


def test_expected_waves_by_hand():
    # 10 rows, oversample 2, 70% rejected: plan 20 (keeps 6, 4 missing), plan 8 (keeps 2.4, 1.6
    # missing), plan 4 for the 2 rows (keeps 1.2, 0.4 missing: done)
    assert expected_waves(10, 2.0, 0.7) == [20, 8, 4]
    assert expected_waves(100, 1.15, 0.1) == [115]  # 103.5 kept: one wave
    assert expected_waves(0, 1.3, 0.5) == []


def test_prefilled_fields_and_their_continuations_join_with_one_space():
    assert join("Question: What", "is the default?") == "Question: What is the default?"  # local: stripped
    assert join("Question: What", " is the default?") == "Question: What is the default?"  # server: kept
    assert join("Question:", "What?") == "Question: What?" and join("Pieces:", " 1, 2") == "Pieces: 1, 2"
    assert join("Question: What", "'s new?") == "Question: What's new?"
