"""Encoders, distillation losses and the generator (tiny random LM): shapes, masks, persistence."""

from __future__ import annotations

import pytest
import torch

from medkit.core.config import GeneratorConfig

from medkit.cxr.config import EncoderConfig, MedKitConfig
from medkit.core.distill import FeatureProjectors, bernoulli_kl, distillation_loss
from medkit.cxr.encoders import CXREncoder
from medkit.cxr.labeler import OBSERVATIONS


@pytest.fixture(scope="module")
def encoders():
    cfg = EncoderConfig(image_size=64)
    return cfg, CXREncoder(cfg, "teacher").eval(), CXREncoder(cfg, "student").eval()


@pytest.mark.parametrize("batch,views", [(1, 1), (2, 2)])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_encoder_shapes(encoders, role, batch, views):
    cfg, teacher, student = encoders
    enc = teacher if role == "teacher" else student
    with torch.no_grad():
        out = enc(torch.randn(batch, views, 1, 64, 64))
    assert out.logits.shape == (batch, len(OBSERVATIONS))
    assert len(out.features) >= 3
    strides = [64 // f.shape[-1] for f in out.features]
    assert strides == [8, 16, 32]
    assert [f.shape[1] for f in out.features] == list(enc.level_channels)
    g = cfg.tokens_grid ** 2
    assert out.tokens.shape == (batch, views * g, enc.out_channels)
    assert out.token_mask.shape == (batch, views * g) and out.token_mask.all()


def test_student_is_smaller_than_teacher(encoders):
    _, teacher, student = encoders
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(student) < 0.8 * n(teacher)


def test_padded_view_does_not_change_prediction(encoders):
    _, _, student = encoders
    x = torch.randn(1, 1, 1, 64, 64)
    padded = torch.cat([x, torch.randn(1, 1, 1, 64, 64)], dim=1)
    with torch.no_grad():
        a = student(x).logits
        b = student(padded, torch.tensor([[True, False]])).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_pretrained_weights_are_loaded():
    cfg = EncoderConfig(image_size=64)
    a, b = CXREncoder(cfg, "student", pretrained=True), CXREncoder(cfg, "student", pretrained=False)
    w = "stem.0.weight"
    assert not torch.allclose(a.state_dict()[w], b.state_dict()[w])


@pytest.mark.parametrize("bad", [torch.randn(2, 1, 64, 64), torch.randn(1, 3, 1, 64, 64)])
def test_encoder_bad_input(encoders, bad):
    with pytest.raises(ValueError):
        encoders[2](bad)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        EncoderConfig(image_size=100)
    with pytest.raises(ValueError, match="student_blocks"):
        EncoderConfig(student_blocks=9)
    with pytest.raises(ValueError, match="unknown config key"):
        MedKitConfig().override(["encoder.nope=1"])
    assert MedKitConfig().override(["train.seed=7"]).train.seed == 7


def test_bernoulli_kl():
    t = torch.randn(4, 14)
    assert float(bernoulli_kl(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(bernoulli_kl(t, -t, 2.0)) > 0.05


def test_distillation_loss_backpropagates(encoders):
    cfg, teacher, student = encoders
    x = torch.randn(2, 2, 1, 64, 64)
    with torch.no_grad():
        t = teacher(x)
    student.train()
    s = student(x)
    proj = FeatureProjectors(student.level_channels, teacher.level_channels)
    losses = distillation_loss(MedKitConfig().distill, proj, s.features, s.logits, t.features, t.logits,
                               torch.zeros(2, 14))
    losses.total.backward()
    assert float(losses.feature) > 0 and float(losses.kl) >= 0
    assert student.stem[0].weight.grad is not None and proj.proj[0].weight.grad is not None
    student.eval()


@pytest.fixture(scope="module")
def tiny_generator(tiny_lm_dir):
    from medkit.core.generator.model import ReportGenerator

    torch.manual_seed(0)
    return ReportGenerator(GeneratorConfig(lm_path=str(tiny_lm_dir), max_new_tokens=5, num_beams=2), visual_dim=32,
                           num_visual_tokens=4)


def test_labels_cover_report_tokens_only(tiny_generator):
    g = tiny_generator
    tokens, mask = torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.bool)
    reports = ["Lungs are clear.", "Small left pleural effusion is seen today."]
    inputs, attn, labels = g.build_inputs(tokens, mask, ["Disease symptoms: none.", "x"], reports)
    assert inputs.shape[:2] == attn.shape == labels.shape
    for b, r in enumerate(reports):
        supervised = labels[b][labels[b] != -100].tolist()
        assert supervised == g.report_ids(r)  # report tokens + EOS, nothing from the prompt


def test_knowledge_changes_generator_input(tiny_generator):
    g = tiny_generator
    tokens, mask = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool)
    a, _, _ = g.build_inputs(tokens, mask, ["Disease symptoms: cardiomegaly."])
    b, _, _ = g.build_inputs(tokens, mask, ["Disease symptoms: pneumothorax; pleural effusion."])
    assert a.shape != b.shape or not torch.allclose(a, b)


def test_generator_loss_and_decode(tiny_generator):
    g = tiny_generator
    tokens, mask = torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.bool)
    out = g(tokens, mask, ["k1", "k2"], ["Lungs are clear.", "No effusion."])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert g.projector[0].weight.grad is not None
    texts = g.generate(tokens, mask, ["k1", "k2"])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_trainable_state_excludes_base_lm(tiny_generator):
    state = tiny_generator.trainable_state()
    assert any("lora_" in k for k in state)
    assert not any(k.startswith("lm.") and "lora_" not in k for k in state)


def test_model_save_load_roundtrip(tmp_path, tiny_lm_dir):
    from medkit.cxr.model import MedKitCXR

    cfg = MedKitConfig().override([f"generator.lm_path={tiny_lm_dir}", "encoder.image_size=64",
                                   "generator.num_beams=1", "generator.max_new_tokens=6",
                                   "generator.int8_inference=false", "generator.runtime=torch"])
    torch.manual_seed(1)
    model = MedKitCXR(cfg).eval()
    with torch.no_grad():  # make LoRA non-trivial so the round trip is a real check
        for n, p in model.generator.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save(tmp_path / "m")
    size_mb = (tmp_path / "m" / "model.safetensors").stat().st_size / 1e6
    assert size_mb < 50
    again = MedKitCXR.load(tmp_path / "m")
    from tests.conftest import NIH_PNG

    a, b = model.report_from_files([NIH_PNG]), again.report_from_files([NIH_PNG])
    assert a == b
    assert a["modality"] == "CXR" and len(a["findings"]) == 14


def test_load_rejects_non_model_dir(tmp_path):
    from medkit.cxr.model import MedKitCXR

    with pytest.raises(ValueError, match="not a MedKit model directory"):
        MedKitCXR.load(tmp_path)


def _tiny_model(tiny_lm_dir, vocab_reports=None):
    from medkit.cxr.model import MedKitCXR

    cfg = MedKitConfig().override([f"generator.lm_path={tiny_lm_dir}", "encoder.image_size=64",
                                   "generator.num_beams=2", "generator.max_new_tokens=8",
                                   "generator.min_new_tokens=8", "generator.int8_inference=false"])
    torch.manual_seed(3)
    model = MedKitCXR(cfg).eval()
    if vocab_reports:
        model.generator.learn_report_text(vocab_reports)
    return model


def test_inference_optimisation_keeps_outputs_with_full_vocab(tiny_lm_dir):
    from tests.conftest import NIH_PNG

    model = _tiny_model(tiny_lm_dir)
    ref = model.report_from_files([NIH_PNG])
    model.generator.report_vocab = torch.arange(len(model.generator.tokenizer))
    model.generator.optimize_for_inference()
    assert model.generator._vocab_map is not None
    assert model.report_from_files([NIH_PNG]) == ref
    with pytest.raises(RuntimeError, match="optimised for inference"):
        model.generator.trainable_state()


def test_pruned_vocab_restricts_output_tokens(tiny_lm_dir):
    from tests.conftest import NIH_PNG, TINY_REPORTS

    model = _tiny_model(tiny_lm_dir, TINY_REPORTS)
    model.generator.optimize_for_inference()
    allowed = set(model.generator.report_vocab.tolist())
    tok, decoded = model.generator.tokenizer, []
    decode = tok.decode
    # the ids of the last decode, the report (re-tokenising the text need not give the same ids back)
    tok.decode = lambda ids, **kw: decoded.append([int(i) for i in ids]) or decode(ids, **kw)
    text = model.report_from_files([NIH_PNG], state_findings=False)["report"]  # the decoder's words only
    assert text and decoded and set(decoded[-1]) <= allowed | {tok.eos_token_id, tok.pad_token_id}


def test_lean_greedy_decoding_matches_transformers_generate(tiny_generator):
    """The batch-1 greedy loop applies the same rules as ``lm.generate`` (repetition penalty,
    n-gram blocking, minimum length), so it must pick the same tokens."""
    g = tiny_generator
    torch.manual_seed(5)
    tokens, mask = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool)
    rules = dict(num_beams=1, max_new_tokens=24, min_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2)
    lean = g.generate(tokens, mask, ["Disease symptoms: none."], **rules)
    inputs, attn, _ = g.build_inputs(tokens, mask, ["Disease symptoms: none."], None, left_pad=True)
    eos = g.tokenizer.eos_token_id
    with torch.no_grad():
        ref = g.lm.generate(inputs_embeds=inputs, attention_mask=attn, do_sample=False, eos_token_id=eos,
                            pad_token_id=g.tokenizer.pad_token_id, **rules)
    assert lean == [g.tokenizer.decode(ref[0], skip_special_tokens=True).strip()]
    assert lean[0]  # min_new_tokens: never an empty report


def test_int8_inference_quantises_all_but_the_mlp_output(tiny_lm_dir):
    from tests.conftest import NIH_PNG

    model = _tiny_model(tiny_lm_dir, ["Lungs are clear.", "No effusion."])
    model.generator.cfg.int8_inference = True
    model.generator.optimize_for_inference()
    greedy = model.report_from_files([NIH_PNG], num_beams=1)["report"]
    if model.generator._onnx is not None:  # greedy decoding on ONNX Runtime leaves the PyTorch LM float
        assert not any("quantized" in type(m).__module__ for m in model.generator.lm.modules())
    assert model.report_from_files([NIH_PNG], num_beams=2)["report"]  # PyTorch decoding: quantised now
    assert model.report_from_files([NIH_PNG], num_beams=1)["report"] == greedy
    modules = dict(model.generator.lm.named_modules())
    q = [m for n, m in modules.items() if n.endswith(("q_proj", "up_proj"))]
    down = [m for n, m in modules.items() if n.endswith("down_proj")]
    assert q and all("quantized" in type(m).__module__ for m in q)
    assert down and all(type(m) is torch.nn.Linear for m in down)
    assert model.report_from_files([NIH_PNG])["report"]


def test_report_starts_from_the_site_template_unless_the_generator_is_asked_for(tiny_lm_dir):
    from medkit.cxr.consistency import align_report
    from tests.conftest import NIH_PNG

    model = _tiny_model(tiny_lm_dir, ["Lungs are clear.", "No effusion."])
    model.cfg.generator.template = ("The lungs are clear.", "No pleural effusion or pneumothorax.")
    calls = []
    decode = model.generator.generate
    model.generator.generate = lambda *a, **k: calls.append(1) or decode(*a, **k)
    out = model.report_from_files([NIH_PNG])
    assert not calls  # the language model is not run for a template report
    expected, _ = align_report("The lungs are clear. No pleural effusion or pneumothorax.",
                               {f["name"]: f["status"] for f in out["findings"]}, model.cfg.generator.borderline)
    assert out["report"] == expected
    assert model.report_from_files([NIH_PNG], state_findings=False)["report"] == \
        "The lungs are clear. No pleural effusion or pneumothorax."
    generated = model.report_from_files([NIH_PNG], report_base="generator", state_findings=False)["report"]
    assert calls and generated != "The lungs are clear. No pleural effusion or pneumothorax."
    with pytest.raises(ValueError, match="report_base"):
        model.report_from_files([NIH_PNG], report_base="retrieval")
    model.cfg.generator.template = ()  # a config fitted before templates: the generator's text
    assert model.report_from_files([NIH_PNG], state_findings=False)["report"] == generated
