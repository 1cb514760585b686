"""Named sources of a kind, and the generation methods of both papers as kinds: img2img (SDEdit / Boomerang),
personalised (class-embedding adaptation; textual inversion for a text-to-image folder) and the DiT closed-set
generator — each built from a tiny model, offline and from a text-to-image folder."""

import json

import numpy as np
import pytest

from runners import pools, sources
from runners.config import ConfigError, load_config
from runners.plan import source_jobs
from tests.tiny_models import tiny_text2image_pipeline

pytestmark = pytest.mark.slow  # generator training: the fast lane is -m "not slow"

TINY_GEN = {"block_out_channels": [8, 16], "train_steps": 12, "batch_size": 8, "sample_steps": 4, "sample_batch": 10}
TINY_DIT = {"architecture": "dit", "num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8}


def _cfg(tmp_path, sources_, n_synth=(0, 10, 30), **extra):
    return load_config(
        {
            "name": "methods",
            "storage": str(tmp_path),
            "dataset": {"name": "digits"},
            "sources": sources_,
            "n_real": [20],
            "n_synth": list(n_synth),
            "seeds": [0],
            "resources": {"cpus_per_trial": 1},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Every offline kind in one sweep; the open-set generator they share trained once."""
    cfg = _cfg(
        tmp_path_factory.mktemp("offline"),
        {
            "real": None,
            "closed_set": TINY_GEN,
            "dit": {"kind": "closed_set", **TINY_GEN, **TINY_DIT},
            "open_set": TINY_GEN,
            "boomerang": {"kind": "img2img", "strength": 0.5, **TINY_GEN},
            "copy": {"kind": "img2img", "strength": 0.01, **TINY_GEN},
            "noise": {"kind": "img2img", "strength": 1.0, **TINY_GEN},
            "personal": {"kind": "personalised", "adapt_steps": 5, **TINY_GEN},
        },
    )
    metas = {s: sources.prepare_pool(cfg, s, 20, 0) for s in cfg.sources}
    return cfg, metas


def test_a_source_is_a_name_of_a_kind_written_as_a_list_or_a_mapping(tmp_path):
    as_list = _cfg(
        tmp_path,
        ["real", "open_set", "sd_a"],
        source_options={"sd_a": {"kind": "img2img", "strength": 0.3}, "open_set": {"preset": "tiny"}},
    )
    as_map = _cfg(
        tmp_path, {"real": None, "open_set": {"preset": "tiny"}, "sd_a": {"kind": "img2img", "strength": 0.3}}
    )
    assert as_list.fingerprint() == as_map.fingerprint() and as_list.sources == as_map.sources
    assert [as_map.kind(s) for s in as_map.sources] == ["real", "open_set", "img2img"]
    assert "kind" not in as_map.options("sd_a") and as_map.options("sd_a")["strength"] == 0.3
    # a config of the four kinds' names stores no kind: it hashes as before named sources existed
    plain = _cfg(tmp_path, ["real", "closed_set"], source_options={"closed_set": {"preset": "tiny"}})
    assert plain.source_options == {"closed_set": {"preset": "tiny"}}


def test_two_names_of_one_kind_with_the_same_options_share_one_pool(tmp_path):
    cfg = _cfg(tmp_path, {"real": None, "closed_set": TINY_GEN, "again": {"kind": "closed_set", **TINY_GEN}})
    assert pools.pool_paths(cfg, "closed_set", 20, 0) == pools.pool_paths(cfg, "again", 20, 0)
    jobs = source_jobs(cfg)
    assert sorted(j["source"] for j in jobs) == ["closed_set", "real"]  # one job, so one generator training
    assert sources.generator_trainings(cfg) == 1
    other = _cfg(
        tmp_path, {"real": None, "closed_set": TINY_GEN, "dit": {"kind": "closed_set", **TINY_GEN, **TINY_DIT}}
    )
    assert len(source_jobs(other)) == 3 and sources.generator_trainings(other) == 2


@pytest.mark.parametrize(
    "named, field",
    [
        ({"x": {"kind": "gan"}}, "source_options.x.kind"),
        ({"real": {"kind": "open_set"}}, "source_options.real.kind"),
        ({"more_real": {"kind": "real"}}, "source_options.more_real.kind"),
        ({"closed_set": {"kind": "open_set"}}, "source_options.closed_set.kind"),
        ({"sd": {"kind": "img2img", "strength": 0}}, "source_options.sd.strength"),
        ({"sd": {"kind": "img2img", "strength": 1.5}}, "source_options.sd.strength"),
        ({"sd": {"kind": "img2img", "strength": -0.2}}, "source_options.sd.strength"),
        ({"sd": {"kind": "img2img", "strength": "half"}}, "source_options.sd.strength"),
        ({"ti": {"kind": "personalised", "adapt_steps": 0}}, "source_options.ti.adapt_steps"),
        ({"ti": {"kind": "personalised", "adapt_lr": 0}}, "source_options.ti.adapt_lr"),
        ({"d": {"kind": "closed_set", "num_layers": 2}}, "source_options.d.num_layers"),
        ({"d": {"kind": "closed_set", "architecture": "vit"}}, "source_options.d.architecture"),
        ({"d": {"kind": "closed_set", "architecture": "dit", "augment": 0.5}}, "source_options.d.augment"),
        ({"d": {"kind": "closed_set", "architecture": "dit", "patch_size": 3}}, "source_options.d.patch_size"),
        ({"i2i": {"kind": "img2img", "pipeline": "/no/such/folder"}}, "source_options.i2i.pipeline"),
    ],
)
def test_bad_named_sources_are_one_line_naming_the_field_before_any_work(tmp_path, named, field):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, {"real": None, **named})
    message = str(err.value)
    assert message.startswith(field + ":") and "\n" not in message, message
    assert not (tmp_path / "methods").exists()  # refused before anything was written


def test_a_name_that_is_not_a_kind_needs_one(tmp_path):
    with pytest.raises(ConfigError, match=r"^sources: 'sd14' is neither a kind .* set source_options\.sd14\.kind"):
        _cfg(tmp_path, ["real", "sd14"])


def test_pipeline_folders_missing_a_component_and_strengths_without_a_step_are_refused(tmp_path):
    folder = tiny_text2image_pipeline(tmp_path / "t2i")
    index = json.loads((folder / "model_index.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps(index))  # lists unet, vae, ... but holds none of them
    for kind in ("img2img", "personalised"):
        with pytest.raises(ConfigError, match=r"^source_options\.m\.pipeline: .* has no '\w+/' folder"):
            _cfg(tmp_path, {"real": None, "m": {"kind": kind, "pipeline": str(broken)}})
    with pytest.raises(ConfigError, match=r"^source_options\.m\.strength: 0\.01 of 25 steps leaves no denoising step"):
        _cfg(tmp_path, {"real": None, "m": {"kind": "img2img", "pipeline": str(folder), "strength": 0.01}})
    with pytest.raises(ConfigError, match=r"^source_options\.m\.adapt_steps: must be at least 1 \(textual-inversion"):
        _cfg(tmp_path, {"real": None, "m": {"kind": "personalised", "pipeline": str(folder), "adapt_steps": 0}})


def test_every_offline_kind_builds_a_pool_of_the_right_size_and_labels(offline):
    cfg, metas = offline
    for name, meta in metas.items():
        images, labels, _ = pools.load_pool(cfg, name, 20, 0, 30)
        assert images.shape == (30, 1, 8, 8) and labels.shape == (30,), name
        assert meta["size"] >= 30 and meta["kind"] == cfg.kind(name)
        assert np.isfinite(meta["copy_share"]), name  # every kind is audited against its reference
    # generators sample class-balanced labels
    for name in ("closed_set", "dit", "open_set", "personal"):
        assert np.bincount(pools.load_pool(cfg, name, 20, 0, 30)[1], minlength=10).tolist() == [3] * 10, name


def test_img2img_labels_are_the_base_images_and_strength_near_0_returns_them(offline):
    from runners.data import dataset_of

    cfg, _ = offline
    data, _ = dataset_of(cfg)
    base = set(sources.Context(cfg, "copy", 20, 0, 0).base.tolist())
    for name in ("copy", "boomerang", "noise"):
        arrays = pools.read_pool(cfg, name, 20, 0).arrays
        assert set(arrays["starts"].tolist()) == base  # every base image is a start, every start a base image
        np.testing.assert_array_equal(arrays["labels"], data.labels[arrays["starts"]])
    near_zero = pools.read_pool(cfg, "copy", 20, 0).arrays
    start = data.images[near_zero["starts"]]
    assert np.abs(near_zero["images"] / 255.0 - start).max() <= 0.5 / 255 + 1e-6  # the base images, to the byte
    for name in ("boomerang", "noise"):  # more strength, further from the start image
        drift = np.abs(pools.read_pool(cfg, name, 20, 0).arrays["images"] / 255.0 - start).mean()
        assert drift > 0.02, (name, drift)
    half = np.abs(pools.read_pool(cfg, "boomerang", 20, 0).arrays["images"] / 255.0 - start).mean()
    full = np.abs(pools.read_pool(cfg, "noise", 20, 0).arrays["images"] / 255.0 - start).mean()
    assert half < full


def test_the_open_set_generator_is_trained_once_for_every_kind_that_starts_from_it(offline):
    cfg, metas = offline
    shared = {metas[n]["generator"] for n in ("open_set", "boomerang", "copy", "noise")}
    assert len(shared) == 1
    generators = list((cfg.run_dir / "generators").iterdir())
    # closed_set + dit (one per base, seed), the shared open-set model, personal's adaptation
    assert len(generators) == 4
    assert metas["open_set"]["generator_shared_by"] == 5  # open_set, three img2img and personal's pools


def test_personalisation_adapts_the_class_embeddings_only(offline):
    import torch

    from runners.generative import load_generator

    cfg, metas = offline
    base, _ = load_generator(cfg.run_dir / "generators" / metas["open_set"]["generator"])
    adapted, meta = load_generator(cfg.run_dir / "generators" / metas["personal"]["generator"])
    assert meta["adapted_from"] == metas["open_set"]["generator"]
    a, b = base.state_dict(), adapted.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed == ["class_embedding.weight"]


def test_a_dit_closed_set_generator_is_a_diffusers_dit(offline):
    from diffusers import DiTTransformer2DModel

    from runners.generative import load_generator

    cfg, metas = offline
    model, meta = load_generator(cfg.run_dir / "generators" / metas["dit"]["generator"])
    assert isinstance(model, DiTTransformer2DModel) and meta["hp"]["architecture"] == "dit"
    assert metas["dit"]["generator"] != metas["closed_set"]["generator"]


@pytest.fixture(scope="module")
def text2image(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return tiny_text2image_pipeline(root / "sd")


def test_img2img_from_a_text_to_image_folder(text2image, tmp_path):
    from runners.data import dataset_of

    cfg = _cfg(
        tmp_path,
        {"real": None, "sdedit": {"kind": "img2img", "pipeline": str(text2image), "steps": 4, "strength": 0.5}},
    )
    meta = sources.prepare_pool(cfg, "sdedit", 20, 0)
    arrays = pools.read_pool(cfg, "sdedit", 20, 0).arrays
    data, _ = dataset_of(cfg)
    assert meta["size"] == 32 and arrays["images"].shape == (32, 1, 8, 8) and arrays["images"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["labels"], data.labels[arrays["starts"]])


def test_textual_inversion_embeddings_load_back_through_load_textual_inversion(text2image, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    cfg = _cfg(
        tmp_path,
        {"real": None, "ti": {"kind": "personalised", "pipeline": str(text2image), "steps": 2, "adapt_steps": 3}},
    )
    meta = sources.prepare_pool(cfg, "ti", 20, 0)
    images, labels, _ = pools.load_pool(cfg, "ti", 20, 0, 30)
    assert images.shape == (30, 1, 8, 8) and np.bincount(labels, minlength=10).tolist() == [3] * 10
    folder = cfg.run_dir / "generators" / next(p.name for p in (cfg.run_dir / "generators").iterdir())
    record = json.loads((folder / "meta.json").read_text())
    assert len(record["tokens"]) == 10 and meta["generator_seconds"] == record["train_seconds"]
    pipe = StableDiffusionPipeline.from_pretrained(text2image, local_files_only=True, safety_checker=None)
    before = len(pipe.tokenizer)
    files = [str(folder / f"learned_embeds-{c}.safetensors") for c in range(10)]
    pipe.load_textual_inversion(files)  # the token each file stores, as diffusers reads it
    assert len(pipe.tokenizer) == before + 10
    table = pipe.text_encoder.get_input_embeddings().weight
    for c, token in enumerate(record["tokens"]):
        saved = load_file(files[c])[token]
        torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids(token)], saved)
    # the learned tokens moved from their class-name initialisation (those whose class the 3 steps drew)
    from runners.data import dataset_of

    fresh = StableDiffusionPipeline.from_pretrained(text2image, local_files_only=True, safety_checker=None)
    table = fresh.text_encoder.get_input_embeddings().weight
    names = dataset_of(cfg)[0].classes
    moved = [
        not torch.allclose(
            load_file(files[c])[token],
            table[fresh.tokenizer(str(names[c]), add_special_tokens=False).input_ids].mean(0),
        )
        for c, token in enumerate(record["tokens"])
    ]
    assert sum(moved) >= 1


def test_textual_inversion_with_a_lora_adapter_loads_back_through_load_lora_weights(text2image, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    cfg = _cfg(
        tmp_path,
        {
            "real": None,
            "lora": {"kind": "personalised", "pipeline": str(text2image), "steps": 2, "adapt_steps": 3, "lora_rank": 2},
        },
    )
    assert cfg.options("lora")["adapt"]["lora_rank"] == 2
    sources.prepare_pool(cfg, "lora", 20, 0)
    images, labels, _ = pools.load_pool(cfg, "lora", 20, 0, 30)
    assert images.shape == (30, 1, 8, 8)
    folder = next((cfg.run_dir / "generators").iterdir())
    assert (folder / "pytorch_lora_weights.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(text2image, local_files_only=True, safety_checker=None)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.load_lora_weights(str(folder), weight_name="pytorch_lora_weights.safetensors")
    lora = [k for k in pipe.unet.state_dict() if "lora" in k]
    assert lora and all(
        torch.equal(pipe.unet.state_dict()[k], v) for k, v in before.items() if k in pipe.unet.state_dict()
    )
    with pytest.raises(ConfigError, match=r"^source_options\.l\.lora_rank: must be a non-negative integer"):
        _cfg(tmp_path, {"real": None, "l": {"kind": "personalised", "pipeline": str(text2image), "lora_rank": -1}})
