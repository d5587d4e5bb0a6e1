"""LTX-2 (audio-video) through our nodes equals diffusers: weights loaded from each layout, and the frames and the sound
of ComfyUI's LTX-2 text-to-video graph (CheckpointLoaderSimple + LTXAVTextEncoderLoader + CLIPTextEncode ×2 +
LTXVConditioning + EmptyLTXVLatentVideo + LTXVAudioVAELoader + LTXVEmptyLatentAudio + LTXVConcatAVLatent +
LTXVScheduler + KSamplerSelect(euler) + SamplerCustom(cfg 3) + LTXVSeparateAVLatent + VAEDecode + LTXVAudioVAEDecode)
against LTX2Pipeline with the same noise, ≤ 1/255; CreateVideo + SaveVideo make an mp4 with sound."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from ltx2_tiny import CHECKPOINT, DIFFUSERS_CHECKPOINT, LAYOUTS, TEXT, build

from nodegraph.diffusion import families
from nodegraph.diffusion.detect import read_header
from nodegraph.diffusion.ltx2.files import load_ltx2_transformer, parameter_counts

PROMPT = "a red cat walking on the sky"
NEGATIVE = "blue square"
SEED, STEPS, WIDTH, HEIGHT, LENGTH, CFG, FPS = 7, 2, 96, 64, 9, 3.0, 25
#: LTX2Pipeline adds spatio-temporal and modality-isolation guidance by default; ComfyUI's SamplerCustom/CFGGuider
#: graph is plain CFG on both modalities, so the reference turns those off.
PLAIN_CFG = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0)


tiny_ltx2 = kit.tiny_fixture(build, "tiny-ltx2-home")
engine = kit.engine_fixture("tiny_ltx2")


def graph(ckpt: str = CHECKPOINT, extra: dict | None = None) -> dict:
    """ComfyUI's LTX-2 text-to-video graph (frames captured as "img", the sound as "snd", the latent as "lat")."""
    wf = {
        "ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=ckpt),
        "clip": kit.node("LTXAVTextEncoderLoader", text_encoder=TEXT, ckpt_name=ckpt),
        "avae": kit.node("LTXVAudioVAELoader", ckpt_name=ckpt),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(NEGATIVE),
        "cond": kit.node("LTXVConditioning", positive=["pos", 0], negative=["neg", 0], frame_rate=float(FPS)),
        "video": kit.node("EmptyLTXVLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1),
        "audio": kit.node("LTXVEmptyLatentAudio", frames_number=LENGTH, frame_rate=FPS, batch_size=1,
                      audio_vae=["avae", 0]),
        "av": kit.node("LTXVConcatAVLatent", video_latent=["video", 0], audio_latent=["audio", 0]),
        "sched": kit.node("LTXVScheduler", steps=STEPS, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                      latent=["video", 0]),
        "sel": kit.node("KSamplerSelect", sampler_name="euler"),
        "sc": kit.node("SamplerCustom", model=["ckpt", 0], add_noise=True, noise_seed=SEED, cfg=CFG,
                       positive=["cond", 0],
                   negative=["cond", 1], sampler=["sel", 0], sigmas=["sched", 0], latent_image=["av", 0]),
        "sep": kit.node("LTXVSeparateAVLatent", av_latent=["sc", 0]),
        "dec": kit.node("VAEDecode", samples=["sep", 0], vae=["ckpt", 2]),
        "adec": kit.node("LTXVAudioVAEDecode", samples=["sep", 1], audio_vae=["avae", 0]),
        "img": kit.capture("dec"),
        "snd": kit.capture("adec"),
        "lat": kit.capture("sc"),
    }
    wf.update(extra or {})
    return wf


def _two_noises(video: tuple, audio: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The video's noise, then the audio's, from one generator seeded with SEED (as our samplers draw them)."""
    from nodegraph.diffusion.sampling import make_noise

    gen = torch.Generator("cpu").manual_seed(SEED)
    return make_noise(video, gen), make_noise(audio, gen)


@pytest.fixture(scope="module")
def reference(tiny_ltx2):
    """LTX2Pipeline's frames [F, H, W, 3] and waveform [1, 2, S] with the noise our SamplerCustom draws for SEED:
    the video's first, then the audio's, from one generator."""
    frames = (LENGTH - 1) // 8 + 1
    audio_frames = round(LENGTH / FPS * 25)
    noise, audio_noise = _two_noises((1, 128, frames, HEIGHT // 32, WIDTH // 32), (1, 8, audio_frames, 4))
    packed = noise.flatten(2).transpose(1, 2)
    vae = tiny_ltx2.audio_vae
    # the pipeline normalises given audio latents: hand it the noise denormalised, so it starts from the same noise
    audio_packed = audio_noise.transpose(1, 2).flatten(2) * vae.latents_std + vae.latents_mean
    pipe = tiny_ltx2.pipeline()
    with torch.no_grad():
        video, audio = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=WIDTH, height=HEIGHT, num_frames=LENGTH,
                            frame_rate=FPS, num_inference_steps=STEPS, guidance_scale=CFG, latents=packed,
                            audio_latents=audio_packed, output_type="pt", return_dict=False, **PLAIN_CFG)
    return video[0].permute(0, 2, 3, 1).float(), audio.float()


@pytest.mark.slow
def test_graph_frames_and_sound_equal_ltx2_pipeline(engine, reference):
    want_frames, want_audio = reference
    cap, elapsed = kit.run_timed(engine, graph())
    frames, sound = cap["img"], cap["snd"]
    assert frames.shape == (LENGTH, HEIGHT, WIDTH, 3) == want_frames.shape
    assert cap["lat"]["samples"].shape == (1, 128, 2, HEIGHT // 32, WIDTH // 32)
    assert cap["lat"]["audio_samples"].shape == (1, 8, 9, 4)
    assert sound["sample_rate"] == 24000 and sound["waveform"].shape == want_audio.shape
    diff = kit.max_diff(frames, want_frames)
    audio_diff = kit.max_diff(sound["waveform"], want_audio)
    print(f"ltx2 tiny run: {elapsed:.2f} s, max |diff| frames {diff:.2e} audio {audio_diff:.2e}, "
          f"peak RSS {kit.peak_rss_mib():.0f} MiB")
    assert diff <= 1 / 255 and audio_diff <= 1 / 255
    assert float(frames.std()) > 0.01 and float(sound["waveform"].std()) > 0  # not blank


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_transformer_layouts_load_the_same_weights(tiny_ltx2, layout):
    path = tiny_ltx2.home / "models" / "diffusion_models" / LAYOUTS[layout]
    header = read_header(path)
    assert families.transformer_loader(header) is load_ltx2_transformer  # not LTX-Video's loader
    model = load_ltx2_transformer(path, header, path.name)
    assert model.family == "ltx2" and model.latent.channels == 128
    kit.assert_same_weights(model.unet, tiny_ltx2.transformer)


@pytest.mark.parametrize("name", [CHECKPOINT, DIFFUSERS_CHECKPOINT])
def test_checkpoint_layouts_load_the_same_weights(tiny_ltx2, name):
    from nodegraph.diffusion.ltx2.public import _manager_and_dtype  # noqa: F401  (import check of the public module)

    path = tiny_ltx2.home / "models" / "checkpoints" / name
    ckpt = families.checkpoint(path, name, None)
    assert ckpt is not None and ckpt.model.family == "ltx2" and ckpt.clip.arch == "ltx2"
    kit.assert_same_weights(ckpt.model.unet, tiny_ltx2.transformer)
    kit.assert_same_weights(ckpt.vae.vae.inner, tiny_ltx2.vae)
    assert ckpt.vae.downscale == 32


def test_shipped_configs_have_the_published_sizes():
    counts = parameter_counts()
    # LTX-2 is published as a 19B audio-video model; Gemma-3 12B's language model is 11.8B of its 12.2B
    assert 18.5e9 < counts["transformer"] < 19.5e9
    assert 11.5e9 < counts["gemma3_12b_text"] < 12.0e9
    assert 1.0e9 < counts["video_vae"] < 1.5e9
    assert counts["audio_vae"] < 0.1e9 and counts["vocoder"] < 0.1e9


def test_missing_gemma_tokenizer_says_where_and_why(tmp_path):
    from nodegraph.diffusion.ltx2.text import gemma_tokenizer

    with pytest.raises(FileNotFoundError, match="Gemma's terms.*tokenizer/"):
        gemma_tokenizer(tmp_path / "gemma_3_12B_it.safetensors")


def test_video_only_latent_is_refused_clearly(engine):
    wf = graph(extra={"sc": dict(graph()["sc"], inputs=dict(graph()["sc"]["inputs"], latent_image=["video", 0]))})
    assert "LTXVConcatAVLatent" in kit.run_error(engine, wf)


@pytest.mark.slow
def test_ksampler_and_create_video_save_an_mp4_with_sound(engine):
    """KSampler samples the audio-video latent (its own loop: same frames for the same sigmas as SamplerCustom's
    euler); CreateVideo + SaveVideo write the frames with the decoded sound."""
    import av

    extra = {"ks": kit.ksampler("ckpt", SEED, STEPS, CFG, positive=["cond", 0], negative=["cond", 1], latent=["av", 0]),
             "sep": kit.node("LTXVSeparateAVLatent", av_latent=["ks", 0]),
             "vid": kit.node("CreateVideo", images=["dec", 0], fps=float(FPS), audio=["adec", 0]),
             "save": kit.node("SaveVideo", video=["vid", 0], filename_prefix="ltx2/av", format="mp4", codec="h264")}
    wf = graph(extra=extra)
    for unused in ("sc", "sched", "sel", "lat"):
        wf.pop(unused)
    cap = kit.run(engine, wf)
    assert cap["img"].shape == (LENGTH, HEIGHT, WIDTH, 3) and float(cap["img"].std()) > 0.01
    path = engine.config.outputs_dir / "ltx2" / "av_00001_.mp4"
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.audio[0].rate in (24000, 48000, 44100)


def test_audio_vae_decode_refuses_a_video_latent(engine):
    wf = graph(extra={"adec": kit.node("LTXVAudioVAEDecode", samples=["video", 0], audio_vae=["avae", 0])})
    for unused in ("sc", "sched", "sel", "lat", "sep", "dec", "img"):
        wf.pop(unused)
    assert "LTXVSeparateAVLatent" in kit.run_error(engine, wf)


@pytest.mark.slow
def test_image_to_video_equals_ltx2_image_to_video_pipeline(engine, tiny_ltx2):
    """LTXVImgToVideo on LTX-2: the first latent frame is the image's and stays (timestep 0 on its tokens), as in
    LTX2ImageToVideoPipeline started from the same latents."""
    from diffusers import LTX2ImageToVideoPipeline

    i2v = {"image": kit.empty_image(WIDTH, HEIGHT, 0x3366CC),
           "i2v": kit.node("LTXVImgToVideo", positive=["cond", 0], negative=["cond", 1], vae=["ckpt", 2],
                       image=["image", 0], width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1, strength=1.0),
           "av": kit.node("LTXVConcatAVLatent", video_latent=["i2v", 2], audio_latent=["audio", 0]),
           "ilat": kit.capture("i2v", 2), "image_out": kit.capture("image")}
    wf = graph(extra=i2v)
    wf["sc"]["inputs"].update(positive=["i2v", 0], negative=["i2v", 1])
    cap = kit.run(engine, wf)
    start = cap["ilat"]
    assert float(start["noise_mask"][0, 0, 0]) == 0.0 and float(start["noise_mask"][0, 0, 1]) == 1.0
    noise, audio_noise = _two_noises(tuple(start["samples"].shape), (1, 8, 9, 4))
    first = torch.cat([start["samples"][:, :, :1], noise[:, :, 1:]], dim=2)
    vae = tiny_ltx2.audio_vae
    audio_packed = audio_noise.transpose(1, 2).flatten(2) * vae.latents_std + vae.latents_mean
    pipe = LTX2ImageToVideoPipeline(**tiny_ltx2.pipeline().components)
    # the pipeline normalises given 5D latents with the VAE's statistics: hand them over denormalised
    mean, std = (s.view(1, -1, 1, 1, 1) for s in (tiny_ltx2.vae.latents_mean, tiny_ltx2.vae.latents_std))
    with torch.no_grad():
        video, audio = pipe(image=cap["image_out"].movedim(-1, 1), prompt=PROMPT, negative_prompt=NEGATIVE,
                            width=WIDTH, height=HEIGHT, num_frames=LENGTH, frame_rate=FPS, num_inference_steps=STEPS,
                            guidance_scale=CFG, latents=first * std + mean, audio_latents=audio_packed,
                            output_type="pt", return_dict=False, **PLAIN_CFG)
    want = video[0].permute(0, 2, 3, 1).float()
    assert kit.max_diff(cap["img"], want) <= 1 / 255
    assert kit.max_diff(cap["snd"]["waveform"], audio.float()) <= 1 / 255


def test_log_mel_puts_a_tone_in_its_mel_band():
    """A 1 kHz tone at 24 kHz lands, after resampling to 16 kHz, in the Slaney mel band that holds 1 kHz; the filters
    have unit area (Slaney normalisation) and the frames follow the hop."""
    from nodegraph.diffusion.ltx2.mel import hz_to_mel, log_mel, mel_filters

    rate, seconds = 24000, 0.5
    t = torch.arange(int(rate * seconds)) / rate
    wave = torch.sin(2 * torch.pi * 1000.0 * t).expand(1, 2, -1).clone()
    mel = log_mel(wave, rate, 16000, 64, 160)
    assert mel.shape == (1, 2, 16000 * seconds // 160 + 1, 64)
    band = int(torch.argmax(mel[0, 0].mean(0)))
    edges = torch.linspace(0.0, float(hz_to_mel(torch.tensor(8000.0))), 66)
    assert float(edges[band]) <= float(hz_to_mel(torch.tensor(1000.0))) <= float(edges[band + 2])
    filters = mel_filters(513, 64, 16000)
    area = (filters * (8000.0 / 512)).sum(0)  # Hz-weighted area of each triangle: 1 with Slaney's norm
    assert torch.allclose(area[4:], torch.ones(60), atol=0.06)


@pytest.mark.slow
def test_audio_encode_gives_latents_the_decoder_reads(engine, tiny_ltx2):
    """LoadAudio → LTXVAudioVAEEncode: normalised latents [1, 8, L, 4] (25 per second), the audio VAE's own encoding
    of the log-mel; LTXVAudioVAEDecode reads them back to 24 kHz sound."""
    from nodegraph.diffusion.ltx2.mel import log_mel
    from nodegraph.media import save_audio

    rate = 16000
    t = torch.arange(rate) / rate
    wave = torch.stack([torch.sin(2 * torch.pi * 440.0 * t), torch.sin(2 * torch.pi * 660.0 * t)])[None] * 0.3
    engine.config.input_dir.mkdir(parents=True, exist_ok=True)
    save_audio(engine.config.input_dir / "tone.flac", {"waveform": wave, "sample_rate": rate}, "flac")
    wf = {"avae": kit.node("LTXVAudioVAELoader", ckpt_name=CHECKPOINT),
          "load": kit.node("LoadAudio", audio="tone.flac"),
          "enc": kit.node("LTXVAudioVAEEncode", audio=["load", 0], audio_vae=["avae", 0]),
          "dec": kit.node("LTXVAudioVAEDecode", samples=["enc", 0], audio_vae=["avae", 0])}
    cap = kit.run(engine, kit.add_captures(wf, wav="load", lat="enc", snd="dec"))
    loaded = cap["wav"]
    vae = tiny_ltx2.audio_vae
    with torch.no_grad():
        raw = vae.encode(log_mel(loaded["waveform"], loaded["sample_rate"], 16000, 16, 160)).latent_dist.mode()
    want = ((raw.transpose(1, 2).flatten(2) - vae.latents_mean) / vae.latents_std).unflatten(2, (8, 4)).transpose(1, 2)
    got = cap["lat"]["samples"]
    assert got.shape == want.shape and got.shape[:2] == (1, 8) and abs(got.shape[2] - 25) <= 1
    assert float((got - want).abs().max()) < 1e-4
    assert cap["snd"]["sample_rate"] == 24000 and cap["snd"]["waveform"].shape[:2] == (1, 2)


def test_checkpoint_clip_says_to_use_the_gemma_loader(engine):
    wf = graph()
    wf["pos"]["inputs"]["clip"] = ["ckpt", 1]  # the all-in-one file holds no Gemma-3
    assert "LTXAVTextEncoderLoader" in kit.run_error(engine, wf)


def test_text_encoder_loader_refuses_a_checkpoint_without_connectors(engine, tiny_ltx2):
    import shutil

    models = tiny_ltx2.home / "models"
    shutil.copy(models / "text_encoders" / TEXT, models / "checkpoints" / "not-ltx2.safetensors")
    wf = graph()
    wf["clip"]["inputs"]["ckpt_name"] = "not-ltx2.safetensors"  # a file without LTX-2's text connectors
    assert "holds no LTX-2 text connectors" in kit.run_error(engine, wf)


def test_gemma_tokenizer_from_the_files_spiece_model(tiny_ltx2):
    """ComfyUI's Gemma-3 files carry the SentencePiece model as a ``spiece_model`` byte tensor: it is the tokenizer
    (BOS + its pieces), before any tokenizer/ folder."""
    import io

    import sentencepiece as spm
    from ltx2_tiny import CORPUS
    from safetensors.torch import load_file, save_file

    from nodegraph.diffusion.ltx2.text import encode_ltx2, load_ltxav_clip

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([CORPUS] * 8), model_writer=buf, vocab_size=48,
                                   pad_id=0, eos_id=1, bos_id=2, unk_id=3, model_type="bpe", hard_vocab_limit=False,
                                   add_dummy_prefix=False, minloglevel=2)  # as Gemma's
    models = tiny_ltx2.home / "models"
    state = load_file(str(models / "text_encoders" / TEXT))
    state["spiece_model"] = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    path = models / "text_encoders" / "gemma_with_spiece.safetensors"
    save_file(state, str(path))
    clip = load_ltxav_clip(path, models / "checkpoints" / CHECKPOINT, (path.name, CHECKPOINT))
    want = [2] + spm.SentencePieceProcessor(model_proto=buf.getvalue()).encode("a red cat walking")
    assert clip.tokenizers[0]("a red cat walking").input_ids == want
    emb, extras = encode_ltx2(clip, "a red cat walking", "cpu")[0]
    assert emb.shape == (1, 1024, 256) and int(extras["attention_mask"].sum()) == 1024


def test_dual_clip_loader_ltxv_takes_gemma_and_the_checkpoint(engine, tiny_ltx2):
    """DualCLIPLoader type ltxv with the LTX-2 checkpoint and Gemma-3 (either order, as ComfyUI loads that pair)
    encodes as LTXAVTextEncoderLoader does."""
    import shutil

    models = tiny_ltx2.home / "models"
    shutil.copy(models / "checkpoints" / CHECKPOINT, models / "text_encoders" / CHECKPOINT)
    wf = {"dual": kit.node("DualCLIPLoader", clip_name1=CHECKPOINT, clip_name2=TEXT, type="ltxv"),
          "clip": kit.node("LTXAVTextEncoderLoader", text_encoder=TEXT, ckpt_name=CHECKPOINT),
          "a": kit.encode(PROMPT, "dual"), "b": kit.encode(PROMPT)}
    cap = kit.run(engine, kit.add_captures(wf, ca="a", cb="b"))
    assert torch.equal(cap["ca"][0][0], cap["cb"][0][0]) and cap["ca"][0][0].shape[-1] == 256


@pytest.mark.slow
def test_sampler_custom_advanced_with_cfg_guider_equals_sampler_custom(engine):
    """RandomNoise + CFGGuider + SamplerCustomAdvanced (the shape of ComfyUI's LTX-2 templates) samples the same
    audio-video latent as SamplerCustom for the same seed, cfg and sigmas."""
    extra = {"noise": kit.node("RandomNoise", noise_seed=SEED),
             "guider": kit.node("CFGGuider", model=["ckpt", 0], positive=["cond", 0], negative=["cond", 1], cfg=CFG),
             "adv": kit.node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sel", 0],
                         sigmas=["sched", 0], latent_image=["av", 0]),
             "alat": kit.capture("adv")}
    cap = kit.run(engine, graph(extra=extra))
    assert torch.equal(cap["alat"]["samples"], cap["lat"]["samples"])
    assert torch.equal(cap["alat"]["audio_samples"], cap["lat"]["audio_samples"])


def test_img_to_video_inplace_equals_img_to_video(engine):
    """LTXVImgToVideoInplace on an empty video latent gives LTXVImgToVideo's latent and noise mask; bypass passes
    the latent through."""

    inplace = {"vae": ["ckpt", 2], "image": ["image", 0], "latent": ["video", 0], "strength": 0.8}
    wf = {"ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
          "video": kit.node("EmptyLTXVLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1),
          "image": kit.empty_image(80, 48, 0xCC6633),
          "inplace": kit.node("LTXVImgToVideoInplace", **inplace, bypass=False),
          "bypass": kit.node("LTXVImgToVideoInplace", **inplace, bypass=True),
          "a": kit.capture("inplace"), "c": kit.capture("bypass")}
    cap = kit.run(engine, wf)
    clip = {"clip": kit.node("LTXAVTextEncoderLoader", text_encoder=TEXT, ckpt_name=CHECKPOINT),
            "pos": kit.encode(PROMPT),
            "i2v": kit.node("LTXVImgToVideo", positive=["pos", 0], negative=["pos", 0], vae=["ckpt", 2],
                        image=["image", 0], width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1, strength=0.8),
            "b": kit.capture("i2v", 2)}
    ref = kit.run(engine, dict(wf, **clip))
    assert torch.allclose(cap["a"]["samples"], ref["b"]["samples"], atol=1e-6)
    assert torch.equal(cap["a"]["noise_mask"], ref["b"]["noise_mask"])
    assert float(cap["a"]["noise_mask"][0, 0, 0]) == pytest.approx(0.2)
    assert not cap["c"]["samples"].any() and "noise_mask" not in cap["c"]


def test_scaled_fp8_transformer_is_refused_clearly(tiny_ltx2):
    from nodegraph.diffusion.detect import UnknownModelError
    from nodegraph.diffusion.ltx2.files import transformer_from_state

    state = dict(tiny_ltx2.transformer.state_dict())
    state["transformer_blocks.0.attn1.to_q.weight_scale"] = torch.ones(())
    with pytest.raises(UnknownModelError, match="scaled fp8.*bf16"):
        transformer_from_state(state, "ltx-2-19b-dev-fp8.safetensors")
