"""A frozen causal language model that reads a soft prompt and answers questions.

Input: [soft prompt (P, D)] "Context: ..." "\\nQuestion: ...\\nAnswer:" and, for training,
" ANSWER<eos>". Without a soft prompt, the tokens of a hand-written instruction take
its place (the discrete-prompt baseline; none when the instruction is empty). The
loss is cross-entropy on the answer tokens (and the end token) only, and the head
computes logits at those positions only. Answers are generated greedily, batched (left
padding, explicit position ids, a key-value cache), up to a token limit, and stop at the
end token or a new line; with `answer_decoding="span"` each step takes the most likely of
the tokens that keep the answer a span of its context (or ends it), as extractive QA's
answers are. The context and the question are tokenized apart, so that the
questions on one context share one pass over it: generation reads each distinct
[prompt][context] once and copies its key-value cache to each of its questions.

A deep prompt (`depth` d > 1, θ of (d·P, D)) also replaces the prompt positions' states
before the decoder's layers 1 .. d − 1, in every pass that reads the prompt (the loss's,
and generation's pass over [prompt][context], whose cache the later passes read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaray.data.squad import QAItem
from metaray.models.deep import forward_hooks, hooks_lock, layer_hooks, prompted_layers, split_depth

CONTEXT = "Context: {context}"
QUESTION = "\nQuestion: {question}\nAnswer:"  # CONTEXT + QUESTION: the whole input
CONTEXT_MODES = ("answer", "head", "refuse")
SPAN_CANDIDATES = 32  # span decoding: the most likely tokens tried at each step, best first


def native_bf16(device: torch.device, capabilities=None) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX-BF16 (`capabilities`: torch.cpu.get_capabilities()'s mapping,
    this CPU's by default). Elsewhere autocast emulates bf16: 19x slower per support step
    than fp32 on an AVX2 CPU (bench/qa_speed.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    caps = torch.cpu.get_capabilities() if capabilities is None else capabilities
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


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
        answer_decoding: str = "greedy",
        instruction: str = "",
        lockstep: bool = False,
        compute_dtype: str = "fp32",
        depth: int = 1,
        backbone: str = "",
    ) -> None:
        """`lockstep`: always decode `max_answer_tokens` steps, never stopping early, so
        that every rank of a partitioned (ZeRO-3) model runs the same forward passes.
        `compute_dtype` "bf16": every forward pass under torch.autocast to bfloat16 (the
        weights, the prompt and its gradient stay float32); "auto": bf16 where this
        process's device has it natively (`native_bf16`), else fp32. `depth`: the prompt's (`backbone`
        names the model where a depth is refused). `answer_decoding`: "greedy" or "span"
        (answers restricted to spans of their context, see `_span_tokens`)."""
        self.tokenizer, self.model, self.lockstep = tokenizer, model, lockstep
        self.depth, self.layers = depth, prompted_layers(model, backbone, depth)
        self._hooks = hooks_lock(bool(self.layers))
        self.max_context_tokens, self.max_answer_tokens = max_context_tokens, max_answer_tokens
        self.answer_decoding, self._pieces = answer_decoding, {}  # token id -> its text alone
        self.embedding = model.get_input_embeddings()
        self.device = self.embedding.weight.device
        if compute_dtype == "auto":
            compute_dtype = "bf16" if native_bf16(self.device) else "fp32"
        self.compute_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[compute_dtype]
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
        self.eos_id = eos if isinstance(eos, int) else eos[0]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.instruction_ids = self.token_ids(instruction.strip() + "\n") if instruction.strip() else []

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _parts(self, prompt: torch.Tensor | None) -> list[torch.Tensor]:
        """The soft prompt's parts (the input's, then each prompted layer's), or in its
        place the embeddings of the instruction's tokens (none without an instruction)."""
        if prompt is not None:
            return split_depth(prompt, self.depth)
        if not self.instruction_ids:
            return []
        return [self.embedding(torch.tensor(self.instruction_ids, device=self.device)).detach()]

    def _deep(self, parts: list[torch.Tensor]):
        """The body's forward pass with the deep parts before their layers (the prompt first),
        under the model's lock (`forward_hooks`): every pass of a deep model goes through here."""
        return forward_hooks(self._hooks, layer_hooks(self.layers, parts, 0, self.device), pre=True)

    @torch.no_grad()
    def prompt_states(self, prompt: torch.Tensor) -> list[torch.Tensor]:
        """The (P, D) states an input prompt has before each prompted layer, read alone: what
        it has there in front of any text too, the attention being causal."""
        with self._deep([]):
            out = self.model(inputs_embeds=prompt.to(self.device).unsqueeze(0), output_hidden_states=True)
        return [out.hidden_states[layer][0].float().cpu() for layer in range(1, self.depth)]

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
        """The whole input's tokens: its (fitted) context's, then its question's."""
        return self._context_ids(self.fit_context(item, mode)) + self._asked_ids(item)

    def _context_ids(self, context: str) -> list[int]:
        return self.token_ids(CONTEXT.format(context=context))

    def _asked_ids(self, item: QAItem) -> list[int]:
        return self.token_ids(QUESTION.format(question=item.question))

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask), both (B, longest row): every row ends in the last column."""
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        return ids, mask.to(self.device)

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
        """Mean cross-entropy over the answer tokens of `items`; differentiable in `prompt` (d·P, D)."""
        parts = self._parts(prompt)
        p = parts[0].shape[0] if parts else 0
        ids, mask, targets = self.answer_batch(items, p)
        scored = (targets[:, 1:] != -100).any(0).nonzero().squeeze(1)  # positions whose next token is scored
        with self._autocast(), self._deep(parts):
            logits = self.model(
                inputs_embeds=self._embed(ids, parts[0] if parts else None),
                attention_mask=mask.to(self.device),
                logits_to_keep=scored.to(self.device),
            ).logits  # (B, len(scored), V): not the head over every position
        return F.cross_entropy(logits.flatten(0, 1).float().cpu(), targets[:, scored + 1].flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None, items: list[QAItem], mode: str = "head") -> list[str]:
        """Greedy answers, one per item, batched: one pass over each distinct context (with
        the prompt), its cache copied to each of its questions, one pass over the questions."""
        parts = self._parts(prompt)
        contexts = [self.fit_context(item, mode) for item in items]
        distinct = list(dict.fromkeys(contexts))
        context_ids = [self._context_ids(c) for c in distinct]
        ids, mask = self._left_padded(context_ids)
        p = parts[0].shape[0] if parts else 0
        mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, p), mask], 1)  # [prompt][padding][context]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        embeds = self._embed(ids, parts[0] if parts else None)
        out = self._step(parts, inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        rows = torch.tensor([distinct.index(c) for c in contexts], device=self.device)
        context_ids = [context_ids[row] for row in rows.tolist()]
        out.cache.reorder_cache(rows)  # row i: the keys and values of item i's context
        ids, asked = self._left_padded([self._asked_ids(item) for item in items])
        mask = torch.cat([mask[rows], asked], 1)  # [prompt][padding][context][padding][question]
        positions = positions[rows, -1:] + asked.cumsum(-1)
        out = self._step(
            [], input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions, cache=out.cache
        )
        generated: list[torch.Tensor] = []
        answers: list[str | None] = [""] * len(items)  # span decoding: each answer so far (None: ended)
        for _ in range(self.max_answer_tokens):
            logits = out.logits[:, -1]
            if self.answer_decoding == "span":
                token = self._span_tokens(logits, answers, contexts, generated, context_ids)
            else:
                token = logits.argmax(-1)
            generated.append(token)
            if not self.lockstep and self._all_stopped(torch.stack(generated, 1)):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = positions[:, -1:] + 1
            out = self._step([], input_ids=token[:, None], attention_mask=mask, position_ids=positions, cache=out.cache)
        return [self._text(row) for row in torch.stack(generated, 1).cpu()]

    def _span_tokens(
        self,
        logits: torch.Tensor,
        answers: list[str | None],
        contexts: list[str],
        generated: list[torch.Tensor],
        context_ids: list[list[int]],
    ) -> torch.Tensor:
        """Each row's next token: the most likely of its `SPAN_CANDIDATES` best and its
        context's own tokens (`context_ids`: a span always has one to start with) that keeps
        its answer (`answers`, updated in place; the tokens so far decoded together, as
        `_text` reads them) a non-empty span of its context (up to letter case: SQuAD's
        scores ignore it), or that ends a non-empty answer (the end token, a new line); the
        end token where none does."""
        chosen = []
        best = logits.topk(SPAN_CANDIDATES, -1).indices.cpu()
        so_far = torch.stack(generated, 1).tolist() if generated else [[] for _ in answers]
        for r, row in enumerate(logits.float().cpu()):
            candidates = torch.cat([best[r], torch.tensor(context_ids[r]), torch.tensor([self.eos_id])]).unique()
            candidates = candidates[row[candidates].argsort(descending=True, stable=True)].tolist()
            context, token = contexts[r].casefold(), self.eos_id
            for candidate in candidates if answers[r] is not None else ():
                piece = self._piece(candidate)
                if candidate == self.eos_id or "\n" in piece:
                    if answers[r].strip():
                        token = candidate
                        break
                    continue
                answer = self.tokenizer.decode([*so_far[r], candidate], skip_special_tokens=True)
                if answer.strip() and answer.strip().casefold() in context:
                    token, answers[r] = candidate, answer
                    break
            if token == self.eos_id or "\n" in self._piece(token):
                answers[r] = None
            chosen.append(token)
        return torch.tensor(chosen, device=logits.device)

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token], skip_special_tokens=True)
        return self._pieces[token]

    def _step(self, parts: list[torch.Tensor], **inputs):
        """A forward pass that extends the cache and computes the head at the last position
        only; the prompt's deep `parts` before their layers (the pass that reads the prompt)."""
        with self._autocast(), self._deep(parts):
            return self.model(**inputs, use_cache=True, logits_to_keep=1)

    def _autocast(self) -> torch.autocast:
        enabled = self.compute_dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=enabled)

    def _text(self, row: torch.Tensor) -> str:
        ids = row.tolist()
        ids = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
        return self.tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip()

    def _all_stopped(self, generated: torch.Tensor) -> bool:
        for row in generated.cpu():
            if self.eos_id not in row.tolist() and "\n" not in self.tokenizer.decode(row, skip_special_tokens=True):
                return False
        return True
