"""A frozen causal language model that reads a soft prompt and answers questions.

Input: [soft prompt (P, D)] "Context: ...\\nQuestion: ...\\nAnswer:" and, for training,
" ANSWER<eos>". Without a soft prompt, the tokens of a hand-written instruction take
its place (the discrete-prompt baseline; none when the instruction is empty). The
loss is cross-entropy on the answer tokens (and the end token) only. Answers are
generated greedily, batched (left padding, explicit position ids, a key-value cache),
up to a token limit, and stop at the end token or a new line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaray.data.squad import QAItem

TEMPLATE = "Context: {context}\nQuestion: {question}\nAnswer:"
CONTEXT_MODES = ("answer", "head", "refuse")


class ContextTooLong(ValueError):
    """A context over the token limit where truncation is not allowed (serving)."""


class PromptedCausalLM:
    """Losses and greedy answers of a frozen causal LM under a soft prompt."""

    def __init__(
        self,
        tokenizer,
        model,
        *,
        max_context_tokens: int = 384,
        max_answer_tokens: int = 16,
        instruction: str = "",
        lockstep: bool = False,
    ) -> None:
        """`lockstep`: always decode `max_answer_tokens` steps, never stopping early, so
        that every rank of a partitioned (ZeRO-3) model runs the same forward passes."""
        self.tokenizer, self.model, self.lockstep = tokenizer, model, lockstep
        self.max_context_tokens, self.max_answer_tokens = max_context_tokens, max_answer_tokens
        self.embedding = model.get_input_embeddings()
        self.device = self.embedding.weight.device
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
        self.eos_id = eos if isinstance(eos, int) else eos[0]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.instruction_ids = self.token_ids(instruction.strip() + "\n") if instruction.strip() else []

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _or_instruction(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """The soft prompt, or in its place the embeddings of the instruction's tokens."""
        if prompt is not None or not self.instruction_ids:
            return prompt
        return self.embedding(torch.tensor(self.instruction_ids, device=self.device)).detach()

    def fit_context(self, item: QAItem, mode: str) -> str:
        """The context, cut to `max_context_tokens`: a window around the answer span
        ("answer", training), its first tokens ("head", evaluation), or an error ("refuse")."""
        encoded = self.tokenizer(item.context, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        n, limit = len(offsets), self.max_context_tokens
        if n <= limit:
            return item.context
        if mode == "refuse":
            raise ContextTooLong(f"the context is {n} tokens, over the limit of {limit} (max_context_tokens)")
        first = 0
        if mode == "answer":
            start, end = item.answer_start, item.answer_start + len(item.answers[0])
            inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start] or [0]
            centre = (inside[0] + inside[-1]) // 2
            first = min(max(centre - limit // 2, 0), n - limit)
        return item.context[offsets[first][0] : offsets[first + limit - 1][1]]

    def _question_ids(self, item: QAItem, mode: str) -> list[int]:
        return self.token_ids(TEMPLATE.format(context=self.fit_context(item, mode), question=item.question))

    def _embed(self, ids: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        tokens = self.embedding(ids.to(self.device))
        if prompt is None:
            return tokens
        soft = prompt.to(self.device, tokens.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
        return torch.cat([soft, tokens], 1)

    def answer_batch(self, items: list[QAItem], prompt_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input ids (B, T), attention mask (B, P+T), targets (B, P+T)): right-padded
        question + answer + end token; targets are -100 everywhere but the answer and end."""
        rows = []
        for item in items:
            question = self._question_ids(item, "answer")
            answer = self.token_ids(" " + item.answers[0])[: self.max_answer_tokens] + [self.eos_id]
            rows.append((question + answer, [-100] * len(question) + answer))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id)
        mask = torch.zeros(len(rows), prompt_len + width, dtype=torch.long)
        targets = torch.full((len(rows), prompt_len + width), -100)
        for r, (row_ids, row_targets) in enumerate(rows):
            ids[r, : len(row_ids)] = torch.tensor(row_ids)
            mask[r, : prompt_len + len(row_ids)] = 1
            targets[r, prompt_len : prompt_len + len(row_ids)] = torch.tensor(row_targets)
        return ids, mask, targets

    def loss(self, prompt: torch.Tensor | None, items: list[QAItem]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of `items`; differentiable in `prompt` (P, D)."""
        prompt = self._or_instruction(prompt)
        p = 0 if prompt is None else prompt.shape[0]
        ids, mask, targets = self.answer_batch(items, p)
        logits = self.model(inputs_embeds=self._embed(ids, prompt), attention_mask=mask.to(self.device)).logits
        shifted = targets[:, 1:]
        scored = (shifted != -100).to(self.device)  # only answer positions: not (B, T, V) logits to the CPU
        return F.cross_entropy(logits[:, :-1][scored].float().cpu(), shifted[shifted != -100])

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None, items: list[QAItem], mode: str = "head") -> list[str]:
        """Greedy answers, one per item, batched."""
        prompt = self._or_instruction(prompt)
        questions = [self._question_ids(item, mode) for item in items]
        p, width = (0 if prompt is None else prompt.shape[0]), max(map(len, questions))
        ids = torch.full((len(items), width), self.pad_id)
        mask = torch.zeros(len(items), p + width, dtype=torch.long)
        mask[:, :p] = 1  # [prompt][left padding][question]: every row ends where generation starts
        for r, q in enumerate(questions):
            ids[r, width - len(q) :] = torch.tensor(q)
            mask[r, p + width - len(q) :] = 1
        mask = mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            inputs_embeds=self._embed(ids, prompt), attention_mask=mask, position_ids=positions, use_cache=True
        )
        generated: list[torch.Tensor] = []
        for _ in range(self.max_answer_tokens):
            token = out.logits[:, -1].argmax(-1)
            generated.append(token)
            if not self.lockstep and self._all_stopped(torch.stack(generated, 1)):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = positions[:, -1:] + 1
            out = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=out.cache,
                use_cache=True,
            )
        return [self._text(row) for row in torch.stack(generated, 1).cpu()]

    def _text(self, row: torch.Tensor) -> str:
        ids = row.tolist()
        ids = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
        return self.tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip()

    def _all_stopped(self, generated: torch.Tensor) -> bool:
        for row in generated.cpu():
            if self.eos_id not in row.tolist() and "\n" not in self.tokenizer.decode(row, skip_special_tokens=True):
                return False
        return True
