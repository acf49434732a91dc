"""Question answering pieces: SQuAD scoring against hand-worked cases, the XQuAD loader,
and the prompted causal LM on a tiny randomly initialised model built from a config."""

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from metaray.config import ConfigError, ModelConfig, PromptConfig, load_config
from metaray.core import InnerConfig
from metaray.core.answers import exact_match, f1_score, normalise_answer, squad_scores
from metaray.core.augment import TextEdits
from metaray.data import DataError, DataRegistry, QAEpisode, TaskSpec, sample_qa_episode
from metaray.data.squad import QAItem, load_squad, qa_episode, split_articles
from metaray.models import (
    ContextTooLong,
    ModelLoadError,
    PromptedCausalLM,
    PromptedQA,
    load_causal_lm,
    native_bf16,
    resolve_backbone,
)
from metaray.models.qa import question_copies


@pytest.mark.parametrize(
    "text, normal",
    [("The Denver Broncos!", "denver broncos"), ("  an  apple,  a pear ", "apple pear"), ("Theory", "theory")],
)
def test_normalisation_follows_squad(text, normal):
    assert normalise_answer(text) == normal


def test_em_and_f1_hand_worked():
    assert exact_match("the Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    # "denver" against "denver broncos": precision 1, recall 1/2 -> F1 2/3
    assert f1_score("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    # best reference counts: "in 1990" vs ["1990", "the year 1990"]: 2*(1/2*1)/(1/2+1) = 2/3; vs "year 1990": 1/2
    assert f1_score("in 1990", ["1990", "the year 1990"]) == pytest.approx(2 / 3)
    assert f1_score("nothing here", ["Broncos"]) == 0.0
    scores = squad_scores(["Broncos", "Denver"], [["Denver Broncos", "Broncos"], ["Denver Broncos"]])
    assert scores["exact_match"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_xquad_loads_and_splits_by_article(data_dir):
    articles = load_squad(f"{data_dir}/xquad/xquad.en.json")
    assert len(articles) == 48 and sum(len(a.items) for a in articles) == 1190
    train, val, test = split_articles(articles, 6, 12, seed=0)
    titles = [{a.title for a in part} for part in (train, val, test)]
    assert (len(train), len(val), len(test)) == (30, 6, 12) and not (titles[0] & titles[1] or titles[0] & titles[2])
    support, query = qa_episode(test[0], 4, 0, seed=1)
    assert len(support) == 4 and len(query) == len(test[0].items) - 4
    assert not {q.id for q in support} & {q.id for q in query}


def test_an_answer_not_in_its_context_names_the_question(tmp_path):
    bad = {"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "q-17", "question": "?", "answers": [{"text": "xyz", "answer_start": 0}]}]}]}]}  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="q-17"):
        load_squad(tmp_path / "bad.json")


def test_a_model_that_is_not_a_causal_lm_is_refused_by_name():
    with pytest.raises(ModelLoadError, match="BertConfig.*not a causal language model"):
        load_causal_lm(ModelConfig())


@pytest.fixture(scope="module")
def tiny_lm():
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(ModelConfig()).where)  # any tokenizer will do
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.sep_token_id, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    return PromptedCausalLM(tokenizer, model, max_context_tokens=24, max_answer_tokens=5)


def item(context: str, answer: str, question: str = "what is it?") -> QAItem:
    return QAItem("q", context, question, (answer,), context.index(answer))


def test_the_loss_reads_the_answer_tokens_only(tiny_lm):
    qa = item("the capital of france is paris .", "paris")
    ids, mask, targets = tiny_lm.answer_batch([qa, item("a b c", "b")], prompt_len=3)
    answer = tiny_lm.token_ids(" paris") + [tiny_lm.eos_id]
    kept = targets[0][targets[0] != -100].tolist()
    assert kept == answer
    assert (targets[:, :3] == -100).all() and mask[0, : 3 + len(tiny_lm._question_ids(qa, "answer")) + 2].all()


def test_the_loss_is_the_cross_entropy_of_every_positions_logits(tiny_lm):
    """The head runs at the scored positions only, and the loss is what the full forward
    pass's logits give on the answer tokens."""
    prompt = torch.randn(3, 32)
    items = [item("the capital of france is paris .", "paris"), item("a b c d e", "c d e")]
    ids, mask, targets = tiny_lm.answer_batch(items, prompt_len=3)
    logits = tiny_lm.model(inputs_embeds=tiny_lm._embed(ids, prompt), attention_mask=mask).logits
    full = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten(), ignore_index=-100)
    assert float(tiny_lm.loss(prompt, items)) == pytest.approx(float(full), rel=1e-5)


def test_the_gradient_reaches_the_prompt_and_not_the_backbone(tiny_lm):
    before = {n: p.clone() for n, p in tiny_lm.model.named_parameters()}
    prompt = torch.randn(3, 32, requires_grad=True)
    tiny_lm.loss(prompt, [item("the capital of france is paris .", "paris")]).backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_lm.model.parameters())
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.model.named_parameters())


def test_generation_reads_the_prompt_as_training_does(tiny_lm):
    """The first generated token is the argmax of the unpadded forward pass that the loss
    sees, for every row of a left-padded batch: the prompt is attended, not masked, and
    questions on one context read its shared cache as if they had read it themselves."""
    prompt = torch.randn(3, 32)
    longer = "a rather longer context than the other one"
    items = [item("short one here", "one"), item(longer, "longer"), item(longer, "other", "which one?")]
    tiny_lm.max_answer_tokens = 1
    try:
        first = tiny_lm.generate(prompt, items)
    finally:
        tiny_lm.max_answer_tokens = 5
    for qa, token in zip(items, first, strict=True):
        ids = torch.tensor([tiny_lm._question_ids(qa, "head")])
        logits = tiny_lm.model(inputs_embeds=tiny_lm._embed(ids, prompt)).logits[0, -1]
        assert token == tiny_lm._text(logits.argmax()[None])
    assert tiny_lm.generate(prompt, items) != tiny_lm.generate(prompt * 0, items)


@pytest.mark.parametrize("prompted", [True, False])
def test_batched_generation_equals_one_at_a_time(tiny_lm, prompted):
    """Also with shared contexts (one pass over each), and with no prompt at all."""
    prompt = torch.randn(3, 32) * 0.1 if prompted else None
    longer = "a rather longer context than the other one"
    questions = ("what is it?", "which one is it here?", "why?")
    items = [item("short one here", "one"), *(item(longer, "longer", q) for q in questions)]
    batched = tiny_lm.generate(prompt, items)
    assert batched == [tiny_lm.generate(prompt, [it])[0] for it in items]


def test_span_decoding_answers_with_spans_of_the_context_and_greedy_where_greedy_is_one(tiny_lm):
    """Every span-decoded answer is a non-empty span of its (fitted) context, where the
    random LM's greedy answers are not; each step takes the best token that keeps it so:
    a row whose greedy answer is already a span answers the same."""
    prompt = torch.randn(3, 32)
    contexts = ["the capital of france is paris .", "a rather longer context than the other one", "x y z w"]
    items = [item(c, c.split()[1], q) for c in contexts for q in ("what is it?", "which one?", "why?")]
    greedy = tiny_lm.generate(prompt, items)
    tiny_lm.answer_decoding = "span"
    try:
        span = tiny_lm.generate(prompt, items)
    finally:
        tiny_lm.answer_decoding = "greedy"
    assert not all(g and g in qa.context for g, qa in zip(greedy, items, strict=True))
    for g, s, qa in zip(greedy, span, items, strict=True):
        assert s and s.casefold() in tiny_lm.fit_context(qa, "head").casefold()
        assert g not in qa.context or s == g


def test_auto_compute_is_bf16_only_where_the_hardware_has_it(tiny_lm):
    """bf16 emulated on a CPU without it is many times slower than fp32: `auto` takes
    bf16 only with AVX512-BF16 or AMX-BF16 (or a CUDA GPU that has it)."""
    cpu = torch.device("cpu")
    avx2 = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
    assert not native_bf16(cpu, avx2)
    assert native_bf16(cpu, {**avx2, "avx512_f": True, "avx512_bf16": True})
    assert native_bf16(cpu, {**avx2, "amx_bf16": True})
    assert not native_bf16(torch.device("meta"))
    here = torch.cpu.get_capabilities()
    expected = torch.bfloat16 if here.get("avx512_bf16") or here.get("amx_bf16") else torch.float32
    lm = PromptedCausalLM(tiny_lm.tokenizer, tiny_lm.model, max_context_tokens=24, compute_dtype="auto")
    assert lm.compute_dtype == expected
    assert load_config("configs/qa.yaml").model.compute_dtype == "auto"  # the shipped QA configs
    assert load_config("configs/squad.yaml").model.compute_dtype == "auto"


def test_bf16_compute_keeps_the_weights_the_prompt_and_its_gradient_fp32(tiny_lm):
    # Weights of a larger scale than the fixture's (whose logits are all near 0, so that
    # bfloat16's rounding may not reach the loss's float32 digits on some CPUs).
    config = copy.deepcopy(tiny_lm.model.config)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    fp32 = PromptedCausalLM(tiny_lm.tokenizer, model, max_context_tokens=24)
    bf16 = PromptedCausalLM(tiny_lm.tokenizer, model, max_context_tokens=24, compute_dtype="bf16")
    items = [item("the capital of france is paris .", "paris"), item("a b c d e", "c d e")]
    prompt = (torch.randn(3, 32) * 0.1).requires_grad_(True)
    loss = bf16.loss(prompt, items)
    loss.backward()
    assert prompt.grad.dtype == torch.float32 and prompt.grad.abs().sum() > 0
    exact = fp32.loss(prompt.detach(), items).item()
    assert loss.item() != exact and loss.item() == pytest.approx(exact, rel=0.05)  # bfloat16 matmuls, close
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    assert len(bf16.generate(prompt.detach(), items)) == 2


def test_long_contexts_are_cut_around_the_answer_or_refused(tiny_lm):
    words = " ".join(f"w{i}" for i in range(60))
    qa = item(words + " target " + words, "target")
    window = tiny_lm.fit_context(qa, "answer")
    assert "target" in window and len(tiny_lm.token_ids(window)) <= 24
    assert tiny_lm.fit_context(qa, "head").startswith("w0")
    with pytest.raises(ContextTooLong, match="over the limit of 24"):
        tiny_lm.fit_context(qa, "refuse")


def test_qa_tasks_visit_every_article_before_repeating(data_dir):
    cfg = load_config("configs/tiny-qa.yaml", [f"data.data_dir={data_dir}"])
    registry = DataRegistry.from_config(cfg.data)
    articles = registry.load("xquad/train")
    assert len(articles) == 48 - 6 - 10
    episodes = [sample_qa_episode(TaskSpec("xquad/train", i, 0, 3, 4, 7), articles) for i in range(len(articles) + 1)]
    assert len({e.title for e in episodes[:-1]}) == len(articles)  # one pass: each article once
    assert episodes[-1].title == episodes[0].title and episodes[-1].support != episodes[0].support  # a new draw
    assert episodes[3] == sample_qa_episode(TaskSpec("xquad/train", 3, 0, 3, 4, 7), articles)  # deterministic
    for e in episodes:
        assert len(e.support) == 3 and len(e.query) == 4 and not {q.id for q in e.support} & {q.id for q in e.query}
    held_out = {a.title for f in ("xquad/val", "xquad/test") for a in registry.load(f)}
    assert len(held_out) == 16 and not held_out & {a.title for a in articles}


def test_squad_meta_training_never_reads_a_paragraph_of_a_held_out_article(data_dir):
    """squad/train: the SQuAD dev articles in neither XQuAD meta-val nor meta-test, all their paragraphs."""
    registry = DataRegistry(data_dir, {"xquad": {"val_articles": 6, "test_articles": 10}})
    train = registry.load("squad/train")
    contexts = {q.context for a in train for q in a.items}
    for family in ("xquad/val", "xquad/test", "squad/val", "squad/test"):
        held = registry.load(family)
        assert not {q.context for a in held for q in a.items} & contexts, family
        assert not {a.title for a in held} & {a.title for a in train}, family
    assert len(train) == 32 and sum(len(a.items) for a in train) > 5000
    xquad_test = {q.context for a in registry.load("xquad/test") for q in a.items}
    assert xquad_test <= {q.context for a in registry.load("squad/test") for q in a.items}  # same articles


def test_without_a_prompt_the_instruction_takes_its_place(tiny_lm):
    instructed = PromptedCausalLM(tiny_lm.tokenizer, tiny_lm.model, max_context_tokens=24, instruction="be brief")
    qa = [item("the capital of france is paris .", "paris")]
    [words] = instructed._parts(None)
    assert words.shape == (len(tiny_lm.token_ids("be brief\n")), 32)
    assert instructed.loss(None, qa) == pytest.approx(float(tiny_lm.loss(words, qa)))
    assert tiny_lm._parts(None) == []  # no instruction: no prompt at all


def test_the_support_loss_draws_inner_batches_of_batch_shots(tiny_lm):
    support = tuple(item(f"word{i} is here .", f"word{i}") for i in range(5))
    episode = QAEpisode("t", support, support[:1])
    qa, prompt = PromptedQA(tiny_lm), torch.randn(3, 32) * 0.1
    loss = qa.support_loss_fn(episode, InnerConfig(batch_shots=2), seed=3)
    losses = [float(loss({"prompt": prompt}, step)) for step in range(6)]
    pairs = [float(tiny_lm.loss(prompt, [a, b])) for i, a in enumerate(support) for b in support[i + 1 :]]
    assert all(min(abs(v - p) for p in pairs) < 1e-5 for v in losses)  # every step: 2 of the 5 questions
    assert len({round(v, 5) for v in losses}) > 1  # a fresh draw per step
    full = qa.support_loss_fn(episode, InnerConfig(batch_shots=0), seed=3)
    assert float(full({"prompt": prompt}, 0)) == pytest.approx(float(tiny_lm.loss(prompt, list(support))))


def test_a_deep_prompt_starts_as_the_shallow_one_and_every_layers_part_learns(tiny_lm):
    """Depth 2 on the 2-layer LM: θ₀'s second part is the input prompt's own states before
    layer 1, which it has there in front of any text (causal attention), so losses and
    answers match the shallow θ₀; every part gets a gradient and moving the deeper one
    changes the loss."""
    deep = PromptedCausalLM(tiny_lm.tokenizer, tiny_lm.model, max_context_tokens=24, max_answer_tokens=5, depth=2)
    shallow_qa, deep_qa = PromptedQA(tiny_lm), PromptedQA(deep)
    init = PromptConfig(length=3, init="vocab")
    theta = deep_qa.init_prompt(init)
    assert theta.shape == (6, 32) and torch.equal(theta[:3], shallow_qa.init_prompt(init))
    qa = [item("the capital of france is paris .", "paris"), item("a b c d e", "c d e")]
    assert float(deep.loss(theta, qa)) == pytest.approx(float(tiny_lm.loss(theta[:3], qa)), abs=1e-5)
    assert deep.generate(theta, qa) == tiny_lm.generate(theta[:3], qa)
    prompt = theta.clone().requires_grad_(True)
    deep.loss(prompt, qa).backward()
    assert all(part.abs().sum() > 0 for part in prompt.grad.split(3))
    moved = theta.clone()
    moved[3:] += 5 * torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    assert abs(float(deep.loss(moved, qa)) - float(deep.loss(theta, qa))) > 1e-3
    assert float(tiny_lm.loss(None, qa)) == pytest.approx(float(deep.loss(None, qa)))  # no prompt, no hooks
    with pytest.raises(ConfigError, match=r"prompt.depth=3: model.backbone 'tiny' has 2 layers.*\[1, 2\]"):
        PromptedCausalLM(tiny_lm.tokenizer, tiny_lm.model, depth=3, backbone="tiny")


def test_question_copies_are_seeded_keep_the_answer_span_and_enter_the_support_loss(tiny_lm):
    """QA's augmentation edits the questions only: the context, answers and answer_start
    are the item's own (the span stays valid), the copies are a function of the seed, and
    the support loss with `inner.views` reads them beside the originals."""
    support = [
        item("the capital of france is paris .", "paris", "which city is the capital of france ?"),
        item("water boils at one hundred degrees .", "one hundred", "at what temperature does water boil ?"),
    ]
    edits = TextEdits(token_dropout=0.3, word_swaps=1)
    copies = question_copies(support, 3, edits, np.random.default_rng(7))
    assert copies == question_copies(support, 3, edits, np.random.default_rng(7))
    assert copies != question_copies(support, 3, edits, np.random.default_rng(8))
    assert len(copies) == 6 and any(c.question != support[i % 2].question for i, c in enumerate(copies))
    for i, edited in enumerate(copies):
        original = support[i % 2]  # copy v of item i at v·2 + i
        assert edited == replace(original, question=edited.question)  # context, answers, answer_start kept
        assert edited.context[edited.answer_start :].startswith(edited.answers[0])
        assert set(edited.question.split()) <= set(original.question.split())
    qa, prompt = PromptedQA(tiny_lm), torch.randn(3, 32) * 0.1
    episode = QAEpisode("t", tuple(support), ())
    plain = qa.support_loss_fn(episode, InnerConfig(batch_shots=0), seed=5)({"prompt": prompt}, 0)
    assert plain.item() == pytest.approx(tiny_lm.loss(prompt, support).item())
    augmented = InnerConfig(batch_shots=0, views=2, augment=edits)
    rng = np.random.default_rng([5, 0])  # the loss's generator at (seed, step)
    expected = tiny_lm.loss(prompt, support + question_copies(support, 2, edits, rng)).item()
    assert qa.support_loss_fn(episode, augmented, seed=5)({"prompt": prompt}, 0).item() == pytest.approx(expected)
