"""Class-conditional diffusion models with diffusers, and text-to-image pipelines from local folders.

The closed-set and open-set (offline default) generators are the same recipe: a ``UNet2DModel`` trained
from scratch on epsilon prediction under a ``DDPMScheduler`` noise schedule, with EMA weights and
classifier-free guidance through a null class (index ``n_classes``), sampled with DPM-Solver++.
Weights are saved and loaded as safetensors via ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from runners.costs import FLOAT_BYTES
from runners.integrity import folder_checksums, verify_folder
from runners.options import AUGMENTATIONS, check_resolution, denoising_steps, generator_steps
from runners.streams import batch_seed
from runners.train import autocast_for, resident_rows
from analysis.io import temp_name

# diffusers is imported inside the functions that build, load or sample a generator: it takes ~3 s per process,
# and the driver and workers import this module through the source registry without building one

NUM_TRAIN_TIMESTEPS = 1000


def build_unet(hp: dict, shape: tuple[int, int, int], n_classes: int):
    from diffusers import UNet2DModel

    check_resolution(hp, shape)
    levels = len(hp["block_out_channels"])
    attn_from = levels - 1 if hp["attention"] else levels  # attention only at the coarsest level
    down = tuple("AttnDownBlock2D" if i >= attn_from else "DownBlock2D" for i in range(levels))
    up = tuple(("AttnUpBlock2D" if i >= attn_from else "UpBlock2D") for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=shape[1],
        in_channels=shape[0],
        out_channels=shape[0],
        block_out_channels=hp["block_out_channels"],
        layers_per_block=hp["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        add_attention=hp["attention"],
        norm_num_groups=min(8, hp["block_out_channels"][0]),
        num_class_embeds=(n_classes + 1) * augment_conditions(hp),
    )


def build_dit(hp: dict, shape: tuple[int, int, int], n_classes: int):
    """A class-conditional DiT (adaLN-Zero) on the images' own pixels; its label table has a row per class plus
    the null class (index ``n_classes``), the same convention as the UNet's."""
    from diffusers import DiTTransformer2DModel

    check_resolution(hp, shape)
    model = DiTTransformer2DModel(
        num_attention_heads=hp["num_attention_heads"],
        attention_head_dim=hp["attention_head_dim"],
        in_channels=shape[0],
        out_channels=shape[0],
        num_layers=hp["num_layers"],
        sample_size=shape[1],
        patch_size=hp["patch_size"],
        num_embeds_ada_norm=n_classes,
    )
    return without_label_dropout(model)


def without_label_dropout(model):
    """A DiT drops labels to the null class itself in training mode; the training loops here do that (p_uncond, or
    never when adapting), so its own dropout is switched off (a loaded DiT has it back)."""
    from diffusers.models.embeddings import LabelEmbedding

    for m in model.modules():
        if isinstance(m, LabelEmbedding):
            m.dropout_prob = 0.0
    return model


def build_denoiser(hp: dict, shape: tuple[int, int, int], n_classes: int):
    """The generator's denoiser: a UNet (the presets) or a DiT (``architecture: dit``)."""
    return build_dit(hp, shape, n_classes) if hp.get("architecture") == "dit" else build_unet(hp, shape, n_classes)


def denoiser_class(hp: dict):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return DiTTransformer2DModel if hp.get("architecture") == "dit" else UNet2DModel


def conditioning_parameters(model) -> list:
    """The class-embedding tables of a denoiser (the conditioning vectors a personalised generator adapts): the
    UNet's ``class_embedding``, a DiT's label tables."""
    from diffusers.models.embeddings import LabelEmbedding

    tables = [m.embedding_table.weight for m in model.modules() if isinstance(m, LabelEmbedding)]
    return tables or [model.class_embedding.weight]


def augment_conditions(hp: dict) -> int:
    """Rows of the class embedding per class: one, or one per symmetry the denoiser may be told of. Row
    ``a * (n_classes + 1) + c`` is class c (or the null class) under symmetry a; a = 0 (the identity) is what
    sampling asks for, so an augmented generator samples exactly as a plain one does."""
    return AUGMENTATIONS if hp.get("augment") else 1


def dihedral(x, which):
    """Each image of ``x`` (B, C, H, W, square) under its symmetry of the square ``which`` (B,) in 0..7: 0 the
    identity, 1-3 rotations by 90, 180, 270 degrees, 4-7 the same after a horizontal flip."""
    out = x.clone()
    for a in range(1, AUGMENTATIONS):
        rows = which == a
        if rows.any():
            y = x[rows].flip(-1) if a >= 4 else x[rows]
            out[rows] = torch.rot90(y, a % 4, dims=(-2, -1))
    return out


def unet_bytes(hp: dict, shape: tuple[int, int, int], n_classes: int) -> int:
    """Bytes of a generator's weights (UNet or DiT), counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return FLOAT_BYTES * sum(p.numel() for p in build_denoiser(hp, shape, n_classes).parameters())


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2")


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def train_diffusion(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    hp: dict,
    *,
    seed: int,
    device: str | None = None,
    progress: bool = False,
    desc: str = "diffusion",
):
    """Train a class-conditional UNet on ``images`` (N, C, H, W) in [0, 1] — an array or a uint8-backed
    :class:`runners.data.FloatImages` view; returns (EMA model, seconds)."""
    device = _device(device)
    gpu = device.startswith("cuda")
    autocast = autocast_for(device, hp.get("precision"))
    torch.manual_seed(seed)
    # a FloatImages view (open_set: every non-test image) stays uint8 on the device; batches become floats
    rows, _, _ = resident_rows(images, device)
    y = torch.as_tensor(labels, dtype=torch.int64, device=device)
    model = build_denoiser(hp, tuple(images.shape[1:]), n_classes).to(device)
    if gpu:  # tensor-core friendly layout for the convolutions (inputs follow the weights' format)
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    sched = noise_scheduler()
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=hp["lr"], weight_decay=0.0, fused=True
    )  # one kernel, not one per tensor
    steps = generator_steps(hp, len(y))
    augment = float(hp.get("augment") or 0.0)  # square images: checked with the resolution in build_unet
    warmup = max(1, steps // 20)
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = int(hp["batch_size"])
    ema_params, params = list(ema.parameters()), list(model.parameters())
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, len(y), (bs,), device=device, generator=gen)
        x0 = rows(idx) * 2 - 1
        cls = torch.where(torch.rand(bs, device=device, generator=gen) < hp["p_uncond"], n_classes, y[idx])
        if augment:  # drawn only when asked for: a plain generator's random stream is the one it always had
            which = torch.randint(1, AUGMENTATIONS, (bs,), device=device, generator=gen)
            which = torch.where(torch.rand(bs, device=device, generator=gen) < augment, which, 0)
            x0 = dihedral(x0, which)
            cls = cls + which * (n_classes + 1)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (bs,), device=device, generator=gen)
        with autocast():
            pred = model(sched.add_noise(x0, noise, t), t, class_labels=cls).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_at.step()
        # EMA warms up (decay grows with steps) so short CPU runs are not dominated by the initial weights
        decay = min(hp["ema_decay"], (1 + step) / (10 + step))
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
    if gpu:
        torch.cuda.synchronize()
    return ema, time.perf_counter() - t0


def adapt_conditioning(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    hp: dict,
    *,
    steps: int,
    lr: float,
    seed: int,
    device: str | None = None,
    progress: bool = False,
    desc: str = "personalising",
):
    """A copy of ``model`` whose class embeddings alone (:func:`conditioning_parameters`, the conditioning vectors)
    are fine-tuned on ``images`` (N, C, H, W) in [0, 1] with their labels, every other weight frozen: Burg et al.'s
    personalisation, offline. Returns (model, seconds)."""
    device = _device(device)
    torch.manual_seed(seed)
    model = without_label_dropout(copy.deepcopy(model)).to(device).train().requires_grad_(False)
    params = conditioning_parameters(model)
    for p in params:
        p.requires_grad_(True)
    rows, _, _ = resident_rows(images, device)
    y = torch.as_tensor(labels, dtype=torch.int64, device=device)
    sched = noise_scheduler()
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = int(hp["batch_size"])
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, len(y), (bs,), device=device, generator=gen)
        x0 = rows(idx) * 2 - 1
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (bs,), device=device, generator=gen)
        loss = F.mse_loss(model(sched.add_noise(x0, noise, t), t, class_labels=y[idx]).sample.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False), time.perf_counter() - t0


def whole_batches(labels: np.ndarray, batch: int) -> None:
    if len(labels) % batch:
        raise ValueError(
            f"sample_batch: {len(labels)} labels are not whole batches of {batch} (pools are sampled "
            "in whole batches, so that a larger pool keeps a smaller one as its prefix)"
        )


@torch.no_grad()
def sample_diffusion(
    model,
    labels: np.ndarray,
    n_classes: int,
    hp: dict,
    *,
    seed: int,
    first_batch: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Images (N, C, H, W) uint8 for the requested ``labels``, by DPM-Solver++ with classifier-free guidance.

    ``labels`` are whole batches of ``hp["sample_batch"]``, the first being batch ``first_batch`` of the stream
    ``seed``: batch b's noise comes from its own seed, so sampling batches 4-7 later gives the same images as
    sampling 0-7 at once (a pool that grows keeps what it has)."""
    return img2img_diffusion(
        model, None, labels, n_classes, hp, strength=1.0, seed=seed, first_batch=first_batch, device=device,
        progress=progress,
    )  # fmt: skip


def _solver():
    from diffusers import DPMSolverMultistepScheduler

    # thresholding clips the predicted x0 to the data range; without it the first steps of a cosine
    # schedule (alpha near 0) amplify epsilon errors without bound
    return DPMSolverMultistepScheduler.from_config(
        noise_scheduler().config, algorithm_type="dpmsolver++", thresholding=True, sample_max_value=1.0
    )


@torch.no_grad()
def img2img_diffusion(
    model,
    images: np.ndarray | None,
    labels: np.ndarray,
    n_classes: int,
    hp: dict,
    *,
    strength: float,
    seed: int,
    first_batch: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """SDEdit (Meng et al. 2022; Boomerang, Luzi et al. 2023): each start image (uint8, N x C x H x W) noised to
    ``strength`` of the schedule and denoised back with class-free guidance towards its label; ``images`` None
    with strength 1 is plain sampling from pure noise. Whole batches of ``hp["sample_batch"]``, batch b's noise
    from its own seed, as :func:`sample_diffusion`."""
    batch = int(hp["sample_batch"])
    whole_batches(labels, batch)
    device = _device(device)
    model = model.to(device).eval()
    autocast = autocast_for(device, hp.get("precision"))
    solver = _solver()
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    steps = int(hp["sample_steps"])
    keep = denoising_steps(steps, strength)
    out = []
    w = float(hp["guidance"])
    for start in tqdm(range(0, len(labels), batch), desc="sampling", disable=not progress, leave=False):
        gen = torch.Generator(device=device).manual_seed(batch_seed(seed, first_batch + start // batch))
        lab = torch.as_tensor(labels[start : start + batch], dtype=torch.int64, device=device)
        z = torch.randn((len(lab),) + shape, device=device, generator=gen)
        solver.set_timesteps(steps, device=device)
        timesteps = solver.timesteps[steps - keep :]
        if images is not None:  # the start images, noised to the first kept step (none kept: returned as they are)
            x0 = torch.as_tensor(images[start : start + batch], device=device).float() / 127.5 - 1
            solver.set_begin_index(steps - keep)
            z = solver.add_noise(x0, z, timesteps[:1].repeat(len(lab))) if keep else x0
        z = _denoise(model, z, lab, n_classes, w, solver, timesteps, autocast)
        out.append(((z.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + shape, np.uint8)


def _denoise(model, z, lab, n_classes: int, w: float, solver, timesteps, autocast):
    """The reverse steps with classifier-free guidance (conditional and null class in one batch)."""
    null = torch.full_like(lab, n_classes)
    for t in timesteps:
        with autocast():  # the solver's own arithmetic stays float32; a DiT needs one timestep per row
            eps = model(torch.cat([z, z]), t.expand(2 * len(z)), class_labels=torch.cat([lab, null])).sample.float()
        cond, uncond = eps.chunk(2)
        z = solver.step(uncond + w * (cond - uncond), t, z).prev_sample
    return z


def save_generator(model, folder: Path, meta: dict) -> None:
    """Weights as safetensors plus the UNet config and a meta.json (seconds, hyper-parameters)."""
    folder = Path(folder)
    tmp = folder.with_name(temp_name(folder.name, str(os.getpid())))  # cleaned on the next start if killed
    model.save_pretrained(tmp, safe_serialization=True)
    meta = {**meta, "files": folder_checksums(tmp)}  # the weights and config, checked before every load
    (tmp / "meta.json").write_text(json.dumps(meta, default=str))
    if folder.exists():  # another worker finished the same content first: identical by construction
        shutil.rmtree(tmp)
    else:
        tmp.replace(folder)


def train_or_load(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    hp: dict,
    *,
    seed: int,
    progress: bool = False,
    desc: str = "diffusion",
):
    """The generator stored in ``folder`` (a content-hash name), trained and saved first when absent."""
    if (Path(folder) / "meta.json").exists():
        return load_generator(folder)
    model, seconds = train_diffusion(images, labels, n_classes, hp, seed=seed, progress=progress, desc=desc)
    meta = {
        "train_seconds": seconds,
        "n_train": int(len(labels)),
        "train_steps": generator_steps(hp, len(labels)),
        "hp": hp,
    }
    save_generator(model, Path(folder), meta)
    return model, meta


def load_generator(folder: Path):
    meta = json.loads((Path(folder) / "meta.json").read_text())
    verify_folder(folder, meta.get("files"), "generator", "delete the folder to retrain it", skip=("meta.json",))
    model = denoiser_class(meta.get("hp", {})).from_pretrained(
        folder, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
    )
    return model, {k: v for k, v in meta.items() if k != "files"}


# --------------------------------------------------------------------------------------------------
# text-to-image pipelines from a local folder (open_set, option a)


def sample_text2image(
    pipeline_dir,
    class_names: list[str],
    labels: np.ndarray,
    shape: tuple[int, int, int],
    *,
    prompt: str = "a photo of {}",
    seed: int,
    steps: int = 25,
    guidance: float = 7.5,
    device: str | None = None,
    batch: int = 16,
    first_batch: int = 0,
    progress: bool = False,
    start_images: np.ndarray | None = None,
    strength: float = 1.0,
    textual_inversion: tuple[list, list[str]] | None = None,
    lora: Path | None = None,
) -> np.ndarray:
    """Prompt a local pipeline with class names; resize to the dataset's (C, H, W); uint8. Whole batches, each
    with its own seed, as :func:`sample_diffusion`. With ``start_images`` (uint8, one per label): image-to-image
    from them at ``strength``, through diffusers' image-to-image pipeline built from the same components. With
    ``textual_inversion`` (files, tokens): the learned tokens are loaded and prompted in place of class names; with
    ``lora`` (a folder), its LoRA weights are loaded into the UNet."""
    whole_batches(labels, batch)
    device = _device(device)
    pipe = load_text2image(pipeline_dir, device)
    words = list(class_names)
    if textual_inversion is not None:  # learned tokens, one per class, in place of the class names
        files, words = textual_inversion
        pipe.load_textual_inversion([str(f) for f in files], token=list(words))
    if lora is not None:  # a LoRA adapter learned with them (personalised, lora_rank > 0)
        pipe.load_lora_weights(str(lora), weight_name="pytorch_lora_weights.safetensors")
    if start_images is not None:  # image-to-image (SDEdit) from the same components
        from diffusers import AutoPipelineForImage2Image

        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
    out = []
    for start in tqdm(range(0, len(labels), batch), desc="text-to-image", disable=not progress, leave=False):
        gen = torch.Generator(device=device).manual_seed(batch_seed(seed, first_batch + start // batch))
        prompts = [prompt.format(words[c]) for c in labels[start : start + batch]]
        kwargs = {}
        if start_images is not None:
            kwargs = {"image": pipeline_images(pipe, start_images[start : start + batch], device), "strength": strength}
        img = pipe(
            prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="pt", **kwargs
        ).images.float()  # (B, 3, h, w) in [0, 1]
        out.append(dataset_images(img, shape))
    return np.concatenate(out) if out else np.zeros((0,) + tuple(shape), np.uint8)


def load_text2image(pipeline_dir, device: str):
    """A local diffusers pipeline folder, on ``device`` (nothing from a hub)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        pipeline_dir, local_files_only=True, use_safetensors=True, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_size(pipe) -> int:
    """The side of the images a pipeline makes (its UNet's latent side times the VAE's factor)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def pipeline_images(pipe, images: np.ndarray, device: str) -> torch.Tensor:
    """Dataset images (uint8, N x C x h x w) as a pipeline takes them: RGB floats in [0, 1] at its resolution."""
    x = torch.as_tensor(images, device=device).float() / 255
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    side = pipeline_size(pipe)
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def dataset_images(img: torch.Tensor, shape) -> np.ndarray:
    """A pipeline's RGB floats in [0, 1] as the dataset's (C, H, W) uint8 images (luma for one channel)."""
    img = F.interpolate(img, size=tuple(shape[1:]), mode="bilinear", antialias=True, align_corners=False)
    if shape[0] == 1:
        img = (img * torch.tensor([0.299, 0.587, 0.114], device=img.device)[:, None, None]).sum(1, keepdim=True)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def class_tokens(class_names) -> list[str]:
    """One new token per class for textual inversion (``<ti-0-airplane>``): never a word the tokenizer knows."""
    return [
        f"<ti-{c}-{''.join(ch for ch in str(name).lower() if ch.isalnum())[:24]}>" for c, name in enumerate(class_names)
    ]


def textual_inversion(
    pipeline_dir,
    class_names,
    images: np.ndarray,
    labels: np.ndarray,
    folder: Path,
    *,
    prompt: str,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    lora_rank: int = 0,
    lora_lr: float = 1e-4,
    device: str | None = None,
    progress: bool = False,
) -> tuple[list[Path], list[str], float]:
    """Textual inversion (Gal et al. 2023): one new token per class whose input embedding alone is trained, with
    the pipeline's denoising loss, on ``images`` (uint8 N x C x h x w, the base subset) of that class; every
    weight of the pipeline frozen. Each class's embedding is saved as ``learned_embeds-<c>.safetensors`` — one
    tensor under its token, the file diffusers' ``load_textual_inversion`` reads. With ``lora_rank`` > 0 the
    UNet's attention projections also learn a LoRA adapter of that rank (peft; Burg et al.'s personalisation
    beyond the tokens), saved beside them as ``pytorch_lora_weights.safetensors`` (what ``load_lora_weights``
    reads). Returns (files, tokens, seconds). A class without images keeps its class-name initialisation."""
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    device = _device(device)
    torch.manual_seed(seed)
    pipe = load_text2image(pipeline_dir, device)
    tok, text, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    for m in (text, unet, vae):
        m.requires_grad_(False)
    tokens = class_tokens(class_names)
    tok.add_tokens(tokens)
    text.resize_token_embeddings(len(tok))
    ids = tok.convert_tokens_to_ids(tokens)
    table = text.get_input_embeddings().weight
    with torch.no_grad():  # start from the class name's own tokens (their mean): the prompt's meaning at step 0
        for i, name in zip(ids, class_names):
            words = tok(str(name), add_special_tokens=False).input_ids
            table[i] = table[words].mean(0) if words else table[: ids[0]].mean(0)
    # the diffusers recipe: the whole input table takes gradients, every row but the new tokens' is put back after
    # each step (CLIP's text model takes token ids, not embeddings)
    table.requires_grad_(True)
    original = table.detach().clone()
    frozen = torch.ones(len(table), dtype=torch.bool, device=table.device)
    frozen[ids] = False
    groups = [{"params": [table], "lr": lr}]
    if lora_rank:
        groups.append({"params": add_lora(unet, lora_rank), "lr": lora_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = pipeline_images(pipe, images, device) * 2 - 1
    y = torch.as_tensor(labels, dtype=torch.int64, device=device)
    prompt_ids = tok(
        [prompt.format(t) for t in tokens], padding="max_length", max_length=tok.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids.to(device)  # fmt: skip
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc="textual inversion", disable=not progress, leave=False):
        idx = torch.randint(0, len(y), (min(batch, len(y)),), device=device, generator=gen)
        with torch.no_grad():
            latents = vae.encode(start[idx]).latent_dist.sample(gen) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, device=device, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), device=device, generator=gen)
        hidden = text(prompt_ids[y[idx]])[0]
        pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=hidden).sample
        target = sched.get_velocity(latents, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            table[frozen] = original[frozen]
    learned = table[ids].detach()
    seconds = time.perf_counter() - t0
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for c, token in enumerate(tokens):
        files.append(folder / f"learned_embeds-{c}.safetensors")
        save_file({token: learned[c].detach().cpu().contiguous()}, str(files[-1]))
    if lora_rank:
        from peft.utils import get_peft_model_state_dict

        type(pipe).save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return files, tokens, seconds


LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # the attention projections, as the diffusers LoRA examples


def add_lora(unet, rank: int) -> list:
    """A LoRA adapter of ``rank`` on the UNet's attention projections (peft); returns its trainable parameters."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    return [p for p in unet.parameters() if p.requires_grad]
