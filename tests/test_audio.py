"""Audio family: label parsing, the three splits, reading / resampling / padding, the log-mel front end
against a NumPy reference, fitting both front ends on generated sounds, predict, and bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.datamodules.audio import (AudioFolderDataModule, FSDDDataModule, SoundsDataModule, fix_length,
                                   generate_sounds, parse_label_pattern, read_audio)
from zoo.errors import ZooUserError
from zoo.models.audio_cnn import AudioCNN, LogMelSpectrogram

sf = pytest.importorskip("soundfile")


def _tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture
def fake_fsdd(tmp_path: Path) -> Path:
    """3 digits x 3 speakers x 8 takes of 0.2 s tones, named like FSDD."""
    root = tmp_path / "audio" / "fsdd" / "recordings"
    root.mkdir(parents=True)
    for digit in range(3):
        for speaker in ("ann", "bob", "cy"):
            for index in range(8):
                sf.write(root / f"{digit}_{speaker}_{index}.wav", _tone(300 + 200 * digit + 7 * index, 0.2, 8000), 8000)
    return tmp_path


def test_label_patterns_parse_fields() -> None:
    fields = parse_label_pattern("{digit}_{speaker}_{index}.wav").fullmatch("7_george_12.wav").groupdict()
    assert fields == {"digit": "7", "speaker": "george", "index": "12"}
    assert parse_label_pattern("rec-{speaker}-{label}.wav").fullmatch("rec-amy-dog.wav")["label"] == "dog"
    assert parse_label_pattern("{digit}_{speaker}_{index}.wav").fullmatch("notes.wav") is None
    with pytest.raises(ZooUserError, match="no {field}"):
        parse_label_pattern("plain.wav")


def test_official_speaker_and_random_splits(fake_fsdd: Path) -> None:
    official = FSDDDataModule(data_dir=str(fake_fsdd), val_fraction=0.2)
    official.setup()
    assert official.class_names == ["0", "1", "2"] and official.num_samples == 8000
    assert all(int(Path(f).stem.split("_")[2]) < 5 for f in official.files["test"])
    assert len(official.files["test"]) == 45
    assert all(int(Path(f).stem.split("_")[2]) >= 5 for s in ("train", "val") for f in official.files[s])

    by_speaker = FSDDDataModule(data_dir=str(fake_fsdd), test_speakers=["bob"], val_fraction=0.2)
    by_speaker.setup()
    speaker = {s: {Path(f).stem.split("_")[1] for f in files} for s, files in by_speaker.files.items()}
    assert speaker["test"] == {"bob"} and "bob" not in speaker["train"] | speaker["val"]  # no speaker leakage
    assert len(by_speaker.files["test"]) == 24

    def random_split() -> dict[str, list[str]]:
        dm = FSDDDataModule(data_dir=str(fake_fsdd), split="random", test_fraction=0.25, val_fraction=0.2, seed=3)
        dm.setup()
        return dm.files

    first, again = random_split(), random_split()
    assert first == again and not set(first["test"]) & set(first["train"] + first["val"])
    assert sorted(Path(f).name[0] for f in first["test"]) == sorted("012" * 6)  # stratified: 6 per digit
    with pytest.raises(ZooUserError, match="speakers: ann, bob, cy"):
        FSDDDataModule(data_dir=str(fake_fsdd), test_speakers=["zed"]).setup()


def test_subfolder_labels_and_conversion_of_stereo_44k(tmp_path: Path) -> None:
    for label, freq in (("cat", 400), ("dog", 900)):
        (tmp_path / label).mkdir()
        for i in range(6):
            sf.write(tmp_path / label / f"{i}.wav", _tone(freq, 0.5, 44100, channels=2), 44100)
    dm = AudioFolderDataModule(data_dir=str(tmp_path), sample_rate=8000, duration=0.75, test_fraction=0.34,
                               val_fraction=0.25)
    dm.setup()
    x, _ = dm.splits["train"]
    assert dm.class_names == ["cat", "dog"] and x.shape[1:] == (6000,)
    wave = read_audio(tmp_path / "cat" / "0.wav", 8000)
    assert wave.shape == (4000,) and wave.dtype == torch.float32  # 0.5 s of stereo 44.1 kHz -> mono 8 kHz
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 400) <= 2  # the tone survives resampling


def test_fix_length_pads_and_crops_in_the_centre() -> None:
    padded = fix_length(torch.ones(4), 8)
    assert padded.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert fix_length(torch.arange(10.0), 4).tolist() == [3, 4, 5, 6]


def test_log_mel_matches_a_numpy_reference() -> None:
    rate, n_fft, hop, n_mels, f_min = 8000, 256, 80, 40, 20.0
    wave = np.random.default_rng(0).standard_normal(4000) * 0.1 + _tone(440, 0.5, rate)
    frontend = LogMelSpectrogram(rate, window_ms=32.0, hop_ms=10.0, n_mels=n_mels, f_min=f_min, f_max=None)
    ours = frontend(torch.tensor(wave, dtype=torch.float32)[None])[0].double().numpy()

    padded = np.pad(wave, n_fft // 2, mode="reflect")  # centred frames, periodic Hann window
    frames = np.stack([padded[i : i + n_fft] for i in range(0, len(padded) - n_fft + 1, hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731 (HTK mel scale)
    edges = 700 * (10 ** (np.linspace(mel(f_min), mel(rate / 2), n_mels + 2) / 2595) - 1)
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        bank[m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    reference = np.log(bank @ power.T + 1e-6)
    assert ours.shape == reference.shape == (n_mels, 51)
    np.testing.assert_allclose(ours, reference, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("frontend", ["melspec", "waveform"])
def test_fit_on_generated_sounds_beats_chance(frontend: str, make_trainer) -> None:
    torch.manual_seed(0)
    dm = SoundsDataModule(samples_per_class=16, batch_size=32, val_fraction=0.15)
    model = AudioCNN(num_classes=dm.num_classes, sample_rate=dm.sample_rate, num_samples=dm.num_samples,
                     frontend=frontend, lr=5e-3)
    trainer = make_trainer(max_epochs=8 if frontend == "melspec" else 20)  # M5 learns more slowly
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] > 0.3, result  # chance: 0.10
    assert list((Path(trainer.default_root_dir) / "artifacts").glob("spectrograms_step*.png"))
    assert list((Path(trainer.default_root_dir) / "artifacts").glob("confusion_matrix_step*.png"))


def test_augmentation_only_in_training() -> None:
    dm = SoundsDataModule(samples_per_class=10, val_fraction=0.2)
    dm.setup()
    batch = dm.splits["train"]
    augmented = dm.batch_transform(train=True)(batch, torch.Generator().manual_seed(0))[0]
    assert augmented.shape == batch[0].shape and not torch.allclose(augmented, batch[0])
    assert dm.batch_transform(train=False) is None
    model = AudioCNN()
    x = batch[0][:4]
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    spec = torch.zeros(4, 1, 40, 101)
    assert (model.spec_augment(spec + 1) == 0).any()  # SpecAugment masks bins and frames


def test_generated_sounds_are_seeded() -> None:
    a, ya = generate_sounds(3, 8000, 0.5, seed=1)
    b, _ = generate_sounds(3, 8000, 0.5, seed=1)
    c, _ = generate_sounds(3, 8000, 0.5, seed=2)
    assert a.shape == (30, 4000) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(ya).tolist() == [3] * 10


def test_predict_input_reads_a_folder_and_rejects_non_audio(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(500, 1.5, 16000), 16000)
    sf.write(tmp_path / "b.wav", _tone(500, 0.3, 8000, channels=2), 8000)
    dm = SoundsDataModule()
    (x, _), = list(dm.predict_input(str(tmp_path)))
    assert x.shape == (2, 8000) and dm.predict_names == ["a.wav", "b.wav"]
    (tmp_path / "c.wav").write_text("not audio")
    with pytest.raises(ZooUserError, match="c.wav"):
        dm.predict_input(str(tmp_path))


def test_bad_files_warn_with_their_names_or_fail(fake_fsdd: Path) -> None:
    rec = fake_fsdd / "audio" / "fsdd" / "recordings"
    (rec / "9_ann_0.wav").write_text("this is text, not audio")
    sf.write(rec / "9_ann_1.wav", np.zeros(0), 8000)
    sf.write(rec / "readme.wav", _tone(300, 0.2, 8000), 8000)
    with pytest.warns(UserWarning) as caught:
        dm = FSDDDataModule(data_dir=str(fake_fsdd))
        dm.setup()
    messages = " ".join(str(w.message) for w in caught)
    assert "9_ann_0.wav" in messages and "9_ann_1.wav (zero-length audio)" in messages and "readme.wav" in messages
    assert dm.class_names == ["0", "1", "2"]
    (rec / "readme.wav").unlink()
    with pytest.raises(ZooUserError, match="2 unreadable or empty audio file"):
        FSDDDataModule(data_dir=str(fake_fsdd), on_bad_file="error").setup()


def test_user_mistakes_are_one_line_errors(tmp_path: Path, fake_fsdd: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooUserError, match="no audio files"):
        AudioFolderDataModule(data_dir=str(tmp_path / "empty"), label_pattern="fsdd").setup()
    with pytest.raises(ZooUserError, match="matches none of the 72 file names"):
        AudioFolderDataModule(data_dir=str(fake_fsdd), label_pattern="{speaker}-{label}.wav").setup()
    with pytest.raises(ZooUserError, match="official split needs a {index} field"):
        AudioFolderDataModule(data_dir=str(fake_fsdd), label_pattern="{label}_{speaker}_{x}.wav",
                              split="official").setup()
    with pytest.raises(ZooUserError, match="impossible spectrogram"):
        AudioCNN(f_max=6000.0)
    args = ["--model", "audio_cnn", "--data", "audio_folder", "--data-dir", str(tmp_path / "empty"),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no audio files in sub-folders")
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_checkpoint_is_plain_data(make_trainer, tmp_path: Path) -> None:
    dm = SoundsDataModule(samples_per_class=10, val_fraction=0.2)
    model = AudioCNN(frontend="waveform")
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, enable_checkpointing=True)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert ckpt["SoundsDataModule"] == {"class_names": list(dm.class_names)}
    json.dumps(dict(ckpt["hyper_parameters"]))  # plain Python values only
    again = AudioCNN.load_from_checkpoint(tmp_path / "a.ckpt").eval()
    x = torch.randn(2, 8000)
    assert torch.equal(model.eval()(x), again(x))
