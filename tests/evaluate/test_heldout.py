"""kiln's own tasks: deterministic, made only from the validation split."""

import random

from kiln import stages
from kiln.corpus import read_documents
from kiln.evaluate.heldout import CHOICE_DISTRACTORS, choice_task, cloze_task, sentences
from tests.conftest import make_text


def docs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"d{i}", make_text(rng, 40)) for i in range(n)]


def test_tasks_are_deterministic_and_independent_of_document_order():
    pairs = docs(12)
    a, b = cloze_task(pairs), cloze_task(list(reversed(pairs)))
    assert a.items and a == b
    c, d = choice_task(pairs), choice_task(list(reversed(pairs)))
    assert c.items and c == d
    assert len(cloze_task(pairs, limit=3).items) == 3


def test_cloze_answers_are_the_last_word_and_occur_earlier_in_the_passage():
    task = cloze_task(docs(12))
    texts = [" ".join(t.split()) for _, t in docs(12)]
    for item in task.items:
        (context,), (answer,) = item.contexts, item.continuations
        word = answer.strip()
        assert answer == " " + word and word.isalpha() and len(word) >= 4
        assert word.lower() in context.lower()  # the passage names it before its last sentence
        assert any(context + answer in t for t in texts)  # a real passage, cut before its final word


def test_continuation_choice_has_one_true_next_sentence_and_distractors_from_other_documents():
    pairs = docs(12)
    task = choice_task(pairs)
    by_doc = {doc_id: sentences(text) for doc_id, text in pairs}
    for item in task.items:
        assert len(item.continuations) == 1 + CHOICE_DISTRACTORS and task.chance == 0.25
        true = item.continuations[item.gold].strip()
        home = [d for d, sents in by_doc.items() if item.contexts[0] + " " + true in " ".join(sents)]
        assert home, "the gold continuation follows the context in its document"
        for i, cont in enumerate(item.continuations):
            if i != item.gold:
                assert not any(cont.strip() in " ".join(by_doc[h]) for h in home)


def test_own_tasks_never_take_their_items_from_the_training_split(tokenized_run):
    cfg, run = tokenized_run
    val = stages.heldout_documents(cfg, run)
    train_texts = [" ".join(d.text.split()) for d in stages.read_split(cfg, run, "train")]
    val_ids = {d for d, _ in val}
    assert val_ids and not val_ids & {d.id for d in stages.read_split(cfg, run, "train")}
    for task in (cloze_task(val), choice_task(val)):
        assert task.items
        for item in task.items:
            gold = item.contexts[item.gold] + item.continuations[item.gold]
            assert not any(gold.strip() in t for t in train_texts)
    assert len(val) < len(list(read_documents(cfg.data)))
