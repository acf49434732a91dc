"""The real SmolLM2-135M-Instruct (GGUF, offline) adapts a soft prompt on one XQuAD
article with the same `core.adapt` as meta-training, and answers its other questions."""

import pytest
import torch

from metaray.config import ModelConfig
from metaray.core import InnerConfig, SoftPrompt, adapt
from metaray.data.squad import load_squad, qa_episode
from metaray.models import PromptedCausalLM, load_causal_lm

pytestmark = pytest.mark.integration


def test_smollm2_adapts_a_prompt_on_one_article_and_answers(data_dir):
    torch.manual_seed(0)
    tokenizer, model = load_causal_lm(ModelConfig(backbone="SmolLM2-135M-Instruct"))
    lm = PromptedCausalLM(tokenizer, model, max_context_tokens=192, max_answer_tokens=8)
    article = load_squad(f"{data_dir}/xquad/xquad.en.json")[0]
    support, query = qa_episode(article, 2, 3, seed=0)
    table = lm.embedding.weight.detach()
    theta = SoftPrompt.from_vocab(8, table, torch.Generator().manual_seed(0)).weight.detach()
    result = adapt({"prompt": theta}, lambda params, step: lm.loss(params["prompt"], support), InnerConfig(steps=3))
    assert result.losses[-1] < result.losses[0], result.losses
    assert not torch.equal(result.adapted_prompt, theta)
    answers = lm.generate(result.adapted_prompt, query)
    assert len(answers) == 3 and all(isinstance(a, str) and "\n" not in a for a in answers)
    assert answers == [lm.generate(result.adapted_prompt, [q])[0] for q in query]  # batching changes nothing
